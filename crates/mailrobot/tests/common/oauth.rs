//! Driving the identity platform emulator's sign-in pages like a person.

use m365_emulator::Emulator;

/// The value of `name="field" value="…"` in a page.
pub fn hidden(html: &str, field: &str) -> String {
    let marker = format!("name=\"{field}\" value=\"");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no {field} in page: {html}")) + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_string()
}

/// Signs in like a person would: the sign-in page, the consent page, and
/// back to the robot's redirect endpoint. Returns the final page's status and body.
pub async fn sign_in_as(
    emu: &Emulator,
    tenant: &str,
    username: &str,
    password: &str,
    authorize_url: &str,
    accept: bool,
) -> (u16, String, String) {
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let page = http.get(authorize_url).send().await.unwrap().text().await.unwrap();
    let flow = hidden(&page, "flow");
    let login = format!("{}/{tenant}/login", emu.base_url());
    let mut response = http
        .post(&login)
        .form(&[("flow", flow.as_str()), ("username", username), ("password", password)])
        .send()
        .await
        .unwrap();
    if response.status().as_u16() == 200 {
        let consent_page = response.text().await.unwrap();
        assert!(consent_page.contains("permissions"), "expected the consent page: {consent_page}");
        let flow = hidden(&consent_page, "flow");
        let action = if accept { "accept" } else { "cancel" };
        response = http
            .post(format!("{}/{tenant}/consent", emu.base_url()))
            .form(&[("flow", flow.as_str()), ("action", action)])
            .send()
            .await
            .unwrap();
    }
    assert_eq!(response.status().as_u16(), 302, "the emulator redirects back to the robot");
    let location = response.headers()["location"].to_str().unwrap().to_string();
    // The redirect URI comes from the robot (`connection authorize`): one
    // that does not reach `serve` means it did not see serve's public URL.
    let back = http
        .get(&location)
        .send()
        .await
        .unwrap_or_else(|e| panic!("the emulator's redirect to {location} reached no robot: {e}"));
    let status = back.status().as_u16();
    (status, back.text().await.unwrap(), location)
}

/// Runs Setup Authentication for `connection` the way an admin does: `serve`
/// to receive the redirect (on any loopback port: Microsoft matches loopback
/// redirect URIs without their port), `connection authorize`, then the
/// sign-in pages.
pub async fn setup_authentication(
    robot: &super::Robot,
    emu: &Emulator,
    tenant: &str,
    connection: &str,
    username: &str,
    password: &str,
) {
    let (mut serve, _) = robot.spawn_serve_anywhere();
    let url = robot.run(&["connection", "authorize", connection]).lines().next().unwrap().to_string();
    let (status, body, _) = sign_in_as(emu, tenant, username, password, &url, true).await;
    let _ = serve.kill();
    let _ = serve.wait();
    assert_eq!(status, 200, "{body}");
}
