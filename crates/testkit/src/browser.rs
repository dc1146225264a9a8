//! A real Chromium, headless, driven over WebDriver (Debian's `chromium`
//! and `chromium-driver`, which the test command installs). Pages are found
//! the way a person or a screen reader finds them: fields by their label,
//! buttons and links by their visible name.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use fantoccini::Locator;
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder};

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const CHROMIUM: &str = "/usr/bin/chromium";

pub struct Browser {
    driver: Child,
    pub client: Client,
    screenshots: PathBuf,
    shots: usize,
}

/// An XPath string literal for `text` (which may hold either quote).
fn xpath_literal(text: &str) -> String {
    if !text.contains('\'') {
        format!("'{text}'")
    } else if !text.contains('"') {
        format!("\"{text}\"")
    } else {
        let parts: Vec<String> = text.split('\'').map(|p| format!("'{p}'")).collect();
        format!("concat({})", parts.join(", \"'\", "))
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium; screenshots go to
    /// `screenshots` (created), numbered in the order taken.
    pub async fn start(screenshots: &Path) -> Browser {
        assert!(
            Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists(),
            "the browser tests need Debian's chromium and chromium-driver (scripts/test.sh installs them)"
        );
        std::fs::create_dir_all(screenshots).unwrap();
        // The WebDriver client links rustls; say which crypto it uses (the
        // robot's ring). Already done by an earlier browser: fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".to_string(),
            serde_json::json!({
                "binary": CHROMIUM,
                // --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,900", "--no-first-run", "--disable-extensions"],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            match ClientBuilder::rustls().expect("TLS roots").capabilities(caps.clone()).connect(&url).await {
                Ok(client) => break client,
                Err(err) if Instant::now() < deadline => {
                    let _ = err;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(err) => panic!("chromedriver on {url} did not start a browser: {err}"),
            }
        };
        Browser { driver, client, screenshots: screenshots.to_path_buf(), shots: 0 }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    pub async fn url(&self) -> String {
        self.client.current_url().await.unwrap().to_string()
    }

    /// Waits up to 10 s for an element.
    async fn find(&self, xpath: &str, what: &str) -> Element {
        match self.client.wait().at_most(Duration::from_secs(10)).for_element(Locator::XPath(xpath)).await {
            Ok(element) => element,
            Err(err) => {
                let page = self.client.source().await.unwrap_or_default();
                panic!("{what} not found ({err}) on {}:\n{page}", self.url().await)
            }
        }
    }

    /// The form field labelled `label` (a `<label for>` with exactly that text).
    pub async fn field(&self, label: &str) -> Element {
        let xpath = format!("//*[@id=//label[normalize-space()={}]/@for]", xpath_literal(label));
        self.find(&xpath, &format!("the field labelled {label:?}")).await
    }

    pub async fn fill(&self, label: &str, value: &str) {
        let field = self.field(label).await;
        field.clear().await.unwrap();
        field.send_keys(value).await.unwrap();
    }

    /// Sets the field's value as a script would (date pickers, whose typed
    /// form depends on the browser's locale).
    pub async fn set_value(&self, label: &str, value: &str) {
        let field = self.field(label).await;
        let arg = serde_json::to_value(&field).unwrap();
        self.client.execute("arguments[0].value = arguments[1];", vec![arg, serde_json::json!(value)]).await.unwrap();
    }

    /// Opens the `<details>` section whose summary reads `summary`.
    pub async fn open_section(&self, summary: &str) {
        let xpath = format!("//summary[normalize-space()={}]", xpath_literal(summary));
        self.find(&xpath, &format!("the section {summary:?}")).await.click().await.unwrap();
    }

    /// Chooses the option with visible text `option` in the select labelled `label`.
    pub async fn select(&self, label: &str, option: &str) {
        let field = self.field(label).await;
        field.select_by_label(option).await.unwrap_or_else(|e| panic!("{label}: no option {option:?}: {e}"));
    }

    /// Chooses a file for the file field labelled `label`.
    pub async fn choose_file(&self, label: &str, path: &Path) {
        self.field(label).await.send_keys(path.to_str().unwrap()).await.unwrap();
    }

    /// Where the link whose visible name is `name` leads (its path).
    pub async fn link_href(&self, name: &str) -> String {
        let xpath = format!("//a[normalize-space()={}]", xpath_literal(name));
        self.find(&xpath, &format!("the link {name:?}")).await.attr("href").await.unwrap().unwrap_or_default()
    }

    /// The browser's cookies for this site as a `Cookie` header value, so a
    /// test can fetch what a click would download.
    pub async fn cookie_header(&self) -> String {
        let cookies = self.client.get_all_cookies().await.unwrap();
        cookies.iter().map(|c| format!("{}={}", c.name(), c.value())).collect::<Vec<_>>().join("; ")
    }

    /// The page's HTML as the browser holds it.
    pub async fn source(&self) -> String {
        self.client.source().await.unwrap()
    }

    /// Clicks the button whose visible name is `name`, and waits for the
    /// page it leads to (every button here submits a form).
    pub async fn click_button(&self, name: &str) {
        let xpath = format!("//button[normalize-space()={}]", xpath_literal(name));
        let button = self.find(&xpath, &format!("the button {name:?}")).await;
        self.navigating(button.click()).await;
    }

    /// Clicks the button named `name` in the table row whose header cell is
    /// `row` and which has a cell reading `cell` (rows that repeat a header).
    pub async fn click_button_in_row(&self, row: &str, cell: &str, name: &str) {
        let xpath = format!(
            "//tr[th[normalize-space()={}] and td[normalize-space()={}]]//button[normalize-space()={}]",
            xpath_literal(row),
            xpath_literal(cell),
            xpath_literal(name)
        );
        let button = self.find(&xpath, &format!("the button {name:?} in row {row:?} / {cell:?}")).await;
        self.navigating(button.click()).await;
    }

    /// Clicks the link whose visible name is `name`, and waits for its page.
    pub async fn click_link(&self, name: &str) {
        let xpath = format!("//a[normalize-space()={}]", xpath_literal(name));
        let link = self.find(&xpath, &format!("the link {name:?}")).await;
        self.navigating(link.click()).await;
    }

    /// Runs `action` and waits until another document has loaded: the old
    /// one carries a mark the new one lacks (a page may look the same
    /// before and after, e.g. a form that comes back with a note).
    async fn navigating<T>(&self, action: impl std::future::Future<Output = Result<T, fantoccini::error::CmdError>>) {
        self.client.execute("window.__beforeClick = true;", vec![]).await.unwrap();
        action.await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let check = "return window.__beforeClick !== true && document.readyState === 'complete';";
            if let Ok(serde_json::Value::Bool(true)) = self.client.execute(check, vec![]).await {
                return;
            }
            assert!(Instant::now() < deadline, "no new page after the click (still {})", self.url().await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the page shows a heading with exactly `text`.
    pub async fn heading(&self, text: &str) {
        let xpath = format!("//*[self::h1 or self::h2][normalize-space()={}]", xpath_literal(text));
        self.find(&xpath, &format!("the heading {text:?}")).await;
    }

    /// The page's visible text.
    pub async fn text(&self) -> String {
        self.client.find(Locator::Css("body")).await.unwrap().text().await.unwrap()
    }

    /// The cells of the table row whose header cell is `name`.
    pub async fn row(&self, name: &str) -> Vec<String> {
        let xpath = format!("//tr[th[normalize-space()={}]]", xpath_literal(name));
        let row = self.find(&xpath, &format!("the row {name:?}")).await;
        let mut cells = Vec::new();
        for cell in row.find_all(Locator::XPath("./th|./td")).await.unwrap() {
            cells.push(cell.text().await.unwrap());
        }
        cells
    }

    /// Saves a PNG of the page as `NN-step.png`.
    pub async fn screenshot(&mut self, step: &str) -> PathBuf {
        self.shots += 1;
        let path = self.screenshots.join(format!("{:02}-{step}.png", self.shots));
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(&path, png).unwrap();
        path
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xpath_literals_hold_any_quote() {
        assert_eq!(xpath_literal("Sign in"), "'Sign in'");
        assert_eq!(xpath_literal("it's"), "\"it's\"");
        assert_eq!(xpath_literal("a'b\"c"), "concat('a', \"'\", 'b\"c')");
    }
}
