//! HTML bodies are stored as received and sanitised only when displayed, so a
//! better sanitiser later improves old tickets too.

use std::sync::LazyLock;

static SANITIZER: LazyLock<ammonia::Builder<'static>> = LazyLock::new(|| {
    let mut builder = ammonia::Builder::default();
    // Inline images point at their MIME part with cid: URLs.
    builder.add_url_schemes(["cid"]);
    builder.link_rel(Some("noopener noreferrer nofollow"));
    builder
});

/// HTML safe to show in the admin UI: no scripts, no event handlers, no
/// javascript: URLs, no forms.
pub fn sanitize(html: &str) -> String {
    SANITIZER.clean(html).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_scripts_and_handlers_keeps_content_and_cid_images() {
        let clean = sanitize(
            r#"<p onclick="evil()">Hello <b>you</b></p><script>alert(1)</script><img src="cid:logo@x"><a href="javascript:alert(1)">x</a>"#,
        );
        assert!(clean.contains("Hello <b>you</b>"));
        assert!(!clean.contains("script"));
        assert!(!clean.contains("onclick"));
        assert!(clean.contains(r#"src="cid:logo@x""#));
        assert!(!clean.contains("javascript"));
    }
}
