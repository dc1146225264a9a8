//! Calls to the REST API with tokens made by the CLI.

use serde_json::Value;

use super::Robot;

/// Creates a token; it is the last line of the command's output.
pub fn token(robot: &Robot, name: &str, read_only: bool) -> String {
    let mut args = vec!["api-token", "create", "--name", name];
    if read_only {
        args.push("--read-only");
    }
    let out = robot.run(&args);
    let last = out.lines().last().unwrap().trim().to_string();
    assert!(last.starts_with("mrt_") && !last.contains(' '), "the token alone on the last line: {out:?}");
    last
}

pub async fn call(method: &str, url: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut request = client.request(method.parse().unwrap(), url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}
