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

/// Points the inline images of sanitised HTML (`src="cid:…"`) at what
/// `resolve` gives for their Content-ID (a download URL, a data: URL);
/// those it does not know stay as they are. One pass, no reparsing: the
/// sanitiser writes every attribute in double quotes.
pub fn rewrite_cids(clean: &str, mut resolve: impl FnMut(&str) -> Option<String>) -> String {
    const SRC: &str = "src=\"";
    let mut out = String::with_capacity(clean.len());
    let mut rest = clean;
    while let Some(at) = rest.find(SRC) {
        let value_start = at + SRC.len();
        let Some(len) = rest[value_start..].find('"') else { break };
        let value = &rest[value_start..value_start + len];
        out.push_str(&rest[..value_start]);
        let is_cid = value.len() > 4 && value.is_char_boundary(4) && value[..4].eq_ignore_ascii_case("cid:");
        match is_cid.then(|| resolve(&content_id_of(&value[4..]))).flatten() {
            Some(url) => out.push_str(&url.replace('&', "&amp;").replace('"', "&quot;")),
            None => out.push_str(value),
        }
        rest = &rest[value_start + len..];
    }
    out.push_str(rest);
    out
}

/// A cid: URL's Content-ID: entity- and percent-decoded (RFC 2392), without
/// angle brackets.
fn content_id_of(url: &str) -> String {
    let url = url.replace("&amp;", "&");
    let bytes = url.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).trim_start_matches('<').trim_end_matches('>').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_images_point_where_they_are_served() {
        let clean = sanitize(
            r#"<p>See <img src="cid:image001.png@01DB9401.E2B6C5F0" alt="x"> and <img src="CID:other%40x"> and <img src="cid:unknown"> <img src="https://example.com/a.png"></p>"#,
        );
        let out = rewrite_cids(&clean, |id| match id {
            "image001.png@01DB9401.E2B6C5F0" => Some("/tickets/TKT-000001/entries/1/attachments/0/image001.png".into()),
            "other@x" => Some("data:image/png;base64,AAAA".into()),
            _ => None,
        });
        assert!(
            out.contains(r#"<img src="/tickets/TKT-000001/entries/1/attachments/0/image001.png" alt="x">"#),
            "{out}"
        );
        assert!(out.contains(r#"<img src="data:image/png;base64,AAAA">"#), "{out}");
        assert!(out.contains(r#"src="cid:unknown""#), "{out}");
        // A URL with a quote cannot break out of the attribute.
        let out = rewrite_cids(&clean, |_| Some(r#"x" onerror="y&"#.into()));
        assert!(out.contains(r#"src="x&quot; onerror=&quot;y&amp;""#), "{out}");
    }

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
