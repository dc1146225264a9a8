//! The few HTML pages: sign-in, MFA, consent, errors and the form_post auto-submit. Plain forms
//! with stable field names and element ids, so tests can drive them with HTTP alone.

use std::fmt::Write;

pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <style>body{{font-family:Segoe UI,Helvetica,Arial,sans-serif;background:#f2f2f2;margin:0}}\
         main{{max-width:440px;margin:48px auto;background:#fff;padding:44px;box-shadow:0 2px 6px rgba(0,0,0,.2)}}\
         h1{{font-size:24px;font-weight:600}} input[type=text],input[type=password],input[type=email]\
         {{width:100%;padding:6px 0;margin:8px 0 16px;border:0;border-bottom:1px solid #666;font-size:15px}}\
         button{{background:#0067b8;color:#fff;border:0;padding:8px 28px;margin-right:8px;font-size:15px}}\
         button.secondary{{background:#ccc;color:#000}} .error{{color:#e81123}} .small{{font-size:12px;color:#666}}\
         </style></head><body><main>{body}</main></body></html>\n",
        t = esc(title)
    )
}

/// Sign-in form: `POST {action}` with `flow`, `username`, `password`.
pub(crate) fn sign_in(
    action: &str,
    flow: &str,
    app_name: &str,
    tenant: &str,
    hint: &str,
    error: Option<&str>,
) -> String {
    let err = error.map(|e| format!("<p id=\"error\" class=\"error\">{}</p>", esc(e))).unwrap_or_default();
    page(
        "Sign in to your account",
        &format!(
            "<h1>Sign in</h1><p>to continue to <b id=\"app\">{app}</b></p>{err}\
             <form id=\"signin\" method=\"post\" action=\"{action}\">\
             <input type=\"hidden\" name=\"flow\" value=\"{flow}\">\
             <label for=\"username\">Email, phone, or Skype</label>\
             <input type=\"email\" id=\"username\" name=\"username\" value=\"{hint}\" autocomplete=\"username\" required>\
             <label for=\"password\">Password</label>\
             <input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\">\
             <button type=\"submit\" id=\"signin-submit\">Sign in</button></form>\
             <p class=\"small\">Directory: <span id=\"tenant\">{tenant}</span> (Microsoft identity platform emulator)</p>",
            app = esc(app_name),
            action = esc(action),
            flow = esc(flow),
            hint = esc(hint),
            tenant = esc(tenant),
        ),
    )
}

/// MFA form: `POST {action}` with `flow`, `otp`.
pub(crate) fn mfa(action: &str, flow: &str, username: &str, error: Option<&str>) -> String {
    let err = error.map(|e| format!("<p id=\"error\" class=\"error\">{}</p>", esc(e))).unwrap_or_default();
    page(
        "Enter code",
        &format!(
            "<h1>Enter code</h1><p id=\"user\">{user}</p><p>Enter the code from your authenticator app.</p>{err}\
             <form id=\"mfa\" method=\"post\" action=\"{action}\">\
             <input type=\"hidden\" name=\"flow\" value=\"{flow}\">\
             <input type=\"text\" id=\"otp\" name=\"otp\" inputmode=\"numeric\" autocomplete=\"one-time-code\">\
             <button type=\"submit\" id=\"mfa-submit\">Verify</button></form>",
            user = esc(username),
            action = esc(action),
            flow = esc(flow),
        ),
    )
}

/// Consent form: `POST {action}` with `flow` and `action=accept` or `action=cancel`.
pub(crate) fn consent(action: &str, flow: &str, app_name: &str, username: &str, perms: &[(String, String)]) -> String {
    let mut items = String::new();
    for (scope, label) in perms {
        let _ = write!(items, "<li data-scope=\"{}\">{}</li>", esc(scope), esc(label));
    }
    page(
        "Permissions requested",
        &format!(
            "<h1>Permissions requested</h1><p id=\"user\">{user}</p>\
             <p><b id=\"app\">{app}</b> would like to:</p><ul id=\"permissions\">{items}</ul>\
             <p class=\"small\">Accepting these permissions means that you allow this app to use your data as \
             specified in their terms of service and privacy statement.</p>\
             <form id=\"consent\" method=\"post\" action=\"{action}\">\
             <input type=\"hidden\" name=\"flow\" value=\"{flow}\">\
             <button type=\"submit\" name=\"action\" value=\"cancel\" id=\"consent-cancel\" class=\"secondary\">\
             Cancel</button><button type=\"submit\" name=\"action\" value=\"accept\" id=\"consent-accept\">Accept</button>\
             </form>",
            user = esc(username),
            app = esc(app_name),
            action = esc(action),
            flow = esc(flow),
        ),
    )
}

/// An error shown to the user instead of a redirect (unknown tenant or app, bad redirect URI…).
pub(crate) fn error(headline: &str, code: u32, trace_id: &str, correlation_id: &str, timestamp: &str) -> String {
    page(
        "Sign in error",
        &format!(
            "<h1>Sorry, but we’re having trouble signing you in.</h1>\
             <p id=\"error-code\">AADSTS{code}</p><p id=\"error-message\">{msg}</p>\
             <p class=\"small\">Request Id: <span id=\"trace-id\">{trace}</span><br>\
             Correlation Id: <span id=\"correlation-id\">{corr}</span><br>Timestamp: {ts}</p>",
            msg = esc(headline),
            trace = esc(trace_id),
            corr = esc(correlation_id),
            ts = esc(timestamp),
        ),
    )
}

/// `response_mode=form_post`: a form that posts the response to the redirect URI by itself.
pub(crate) fn form_post(target: &str, fields: &[(String, String)]) -> String {
    let mut inputs = String::new();
    for (k, v) in fields {
        let _ = write!(inputs, "<input type=\"hidden\" name=\"{}\" value=\"{}\">", esc(k), esc(v));
    }
    format!(
        "<!DOCTYPE html>\n<html><head><title>Working...</title></head><body>\
         <form method=\"POST\" name=\"hiddenform\" action=\"{}\">{inputs}\
         <noscript><p>Script is disabled. Click Submit to continue.</p><input type=\"submit\" value=\"Submit\"></noscript>\
         </form><script>window.setTimeout(function(){{document.forms[0].submit()}},0);</script></body></html>\n",
        esc(target)
    )
}

/// A plain information page (sign-out, the error code lookup, the index).
pub(crate) fn info(title: &str, paragraphs: &[&str]) -> String {
    let body: String = paragraphs.iter().map(|p| format!("<p>{}</p>", esc(p))).collect();
    page(title, &format!("<h1>{}</h1>{body}", esc(title)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_attribute_values() {
        let p = form_post("https://x/cb", &[("state".into(), "a\"><script>".into())]);
        assert!(p.contains("value=\"a&quot;&gt;&lt;script&gt;\""));
    }
}
