//! A real browser for the dashboard's tests: Debian's Chromium, headless, driven by its
//! `chromedriver` through the W3C WebDriver protocol (the `fantoccini` client).
//!
//! chromedriver runs in a process group of its own, and Chromium inherits it: dropping the
//! [`Browser`] (also when a test panics) ends the session and kills the whole group, so no
//! browser outlives the test.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

pub struct Browser {
    driver: Child,
    /// The WebDriver session; taken by `drop` to end it.
    client: Option<Client>,
    _profile: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session.
    pub async fn start() -> Browser {
        for tool in ["chromium", "chromedriver"] {
            let found = Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().unwrap();
            assert!(
                found.status.success(),
                "{tool} is not installed: run the tests with `make test` (tests/support/ensure-chromium.sh \
                 installs it), or apt-get install chromium chromium-driver"
            );
        }
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("starting chromedriver");
        let profile = tempfile::tempdir().unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
        let start = Instant::now();
        loop {
            if let Ok(res) = http.get(format!("{base}/status")).send().await {
                if res.json::<Value>().await.map(|v| v["value"]["ready"] == true).unwrap_or(false) {
                    break;
                }
            }
            assert!(start.elapsed() < Duration::from_secs(20), "chromedriver did not become ready in 20 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // No network here: without these flags Chromium stalls on connection attempts.
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,1000",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
        });
        let Value::Object(caps) = caps else { unreachable!() };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&base)
            .await
            .unwrap_or_else(|e| panic!("no WebDriver session: {e}"));
        Browser { driver, client: Some(client), _profile: profile }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("the session is open until drop")
    }

    /// Navigates to `url`. A page that reloads itself on a timer (the overview) can start
    /// its reload just as the navigation begins and win, leaving the browser where it was;
    /// then the navigation is made again.
    pub async fn goto(&self, url: &str) {
        let before = self.url().await;
        for _ in 0..3 {
            self.client().goto(url).await.unwrap_or_else(|e| panic!("WebDriver goto {url}: {e}"));
            // Still where it was: the page's own reload won. (A page that moves on by
            // itself, a form that submits on load, has moved, and that counts.)
            if before.starts_with(url) || self.url().await != before {
                return;
            }
        }
        panic!("could not navigate to {url}; the browser stays at {before}");
    }

    pub async fn url(&self) -> String {
        self.client().current_url().await.unwrap_or_else(|e| panic!("WebDriver current URL: {e}")).to_string()
    }

    /// Runs `script` in the page (a function body; `arguments` holds `args`, a JSON array).
    pub async fn js(&self, script: &str, args: Value) -> Value {
        self.client().execute(script, arguments(args)).await.unwrap_or_else(|e| panic!("WebDriver script: {e}"))
    }

    /// Runs an async `script`: it gets a callback as its last argument.
    pub async fn js_async(&self, script: &str, args: Value) -> Value {
        self.client()
            .execute_async(script, arguments(args))
            .await
            .unwrap_or_else(|e| panic!("WebDriver async script: {e}"))
    }

    async fn all(&self, css: &str) -> Vec<Element> {
        self.client().find_all(Locator::Css(css)).await.unwrap_or_else(|e| panic!("WebDriver find {css:?}: {e}"))
    }

    /// The element matching `css`, if there is one now.
    pub async fn find(&self, css: &str) -> Option<Element> {
        self.all(css).await.into_iter().next()
    }

    /// How many elements match `css`.
    pub async fn count(&self, css: &str) -> usize {
        self.all(css).await.len()
    }

    /// Waits for an element matching `css`.
    pub async fn wait(&self, css: &str) -> Element {
        let start = Instant::now();
        loop {
            if let Some(e) = self.find(css).await {
                return e;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "no element {css:?} within 15 s on {}; page: {}",
                self.url().await,
                self.text("body").await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clicks the element matching `css`, waiting for it. A page that re-renders (a live
    /// list, a reload on a timer) can replace the element between the find and the click:
    /// then it is found again, for up to 15 s.
    pub async fn click(&self, css: &str) {
        self.on_element(css, "click", |e| async move { e.click().await }).await;
    }

    /// Replaces the text of an input or textarea (found again if the page replaced it).
    pub async fn type_into(&self, css: &str, text: &str) {
        self.on_element(css, "type into", |e| async move {
            e.clear().await?;
            e.send_keys(text).await
        })
        .await;
    }

    async fn on_element<F, Fut>(&self, css: &str, what: &str, act: F)
    where
        F: Fn(Element) -> Fut,
        Fut: std::future::Future<Output = Result<(), fantoccini::error::CmdError>>,
    {
        let start = Instant::now();
        loop {
            let e = self.wait(css).await;
            match act(e).await {
                Ok(()) => return,
                // The element went stale (or is not interactable yet): find it again.
                Err(_) if start.elapsed() < Duration::from_secs(15) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(err) => panic!("WebDriver {what} {css:?}: {err}"),
            }
        }
    }

    /// The visible text of the first element matching `css` (empty when there is none).
    pub async fn text(&self, css: &str) -> String {
        match self.find(css).await {
            // The element can go between the find and the read (a page re-rendering): empty.
            Some(e) => e.text().await.unwrap_or_default(),
            None => String::new(),
        }
    }

    /// Waits until the text of `css` contains `want`; returns it.
    pub async fn wait_text(&self, css: &str, want: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            let t = self.text(css).await;
            if t.contains(want) {
                return t;
            }
            assert!(start.elapsed() < timeout, "{css:?} never showed {want:?} within {timeout:?}; it shows {t:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Saves a PNG of the viewport to `path`.
    pub async fn screenshot(&self, path: &std::path::Path) {
        let png = self.client().screenshot().await.unwrap_or_else(|e| panic!("WebDriver screenshot: {e}"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

/// A script's arguments: the elements of a JSON array (`json!([])` for none).
fn arguments(args: Value) -> Vec<Value> {
    match args {
        Value::Array(items) => items,
        other => panic!("script arguments are a JSON array, not {other}"),
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // End the session (closes Chromium cleanly), then kill the process group whatever
        // happened: chromedriver and every Chromium process it started. The session's
        // connection lives on the test's runtime, which may be ending (a panic): bounded.
        if let Some(client) = self.client.take() {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                let _ = std::thread::spawn(move || {
                    handle.block_on(async { tokio::time::timeout(Duration::from_secs(5), client.close()).await })
                })
                .join();
            }
        }
        let pgid = self.driver.id();
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pgid}")]).status();
        let _ = self.driver.wait();
    }
}
