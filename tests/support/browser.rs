//! A real browser for the dashboard's tests: Debian's Chromium, headless, driven by its
//! `chromedriver` over the W3C WebDriver JSON protocol (a handful of calls, with reqwest).
//!
//! chromedriver runs in a process group of its own, and Chromium inherits it: dropping the
//! [`Browser`] (also when a test panics) ends the session and kills the whole group, so no
//! browser outlives the test.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
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
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Browser { driver, base, session: String::new(), http, _profile: profile };
        let start = Instant::now();
        loop {
            if let Ok(res) = browser.http.get(format!("{}/status", browser.base)).send().await {
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
            &format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
        }}});
        let res = browser.http.post(format!("{}/session", browser.base)).json(&caps).send().await.unwrap();
        let body: Value = res.json().await.unwrap();
        browser.session =
            body["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no WebDriver session: {body}")).to_string();
        browser
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let status = res.status();
        let value: Value = res.json().await.unwrap();
        assert!(status.is_success(), "WebDriver {method} {path} answered {status}: {value}");
        value["value"].clone()
    }

    /// Navigates to `url`. A page that reloads itself on a timer (the overview) can start
    /// its reload just as the navigation begins and win, leaving the browser where it was;
    /// then the navigation is made again.
    pub async fn goto(&self, url: &str) {
        let before = self.url().await;
        for _ in 0..3 {
            self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url }))).await;
            // Still where it was: the page's own reload won. (A page that moves on by
            // itself, a form that submits on load, has moved, and that counts.)
            if before.starts_with(url) || self.url().await != before {
                return;
            }
        }
        panic!("could not navigate to {url}; the browser stays at {before}");
    }

    pub async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None).await.as_str().unwrap().to_string()
    }

    /// Runs `script` in the page (a function body; `arguments` holds `args`).
    pub async fn js(&self, script: &str, args: Value) -> Value {
        self.call(reqwest::Method::POST, "/execute/sync", Some(json!({ "script": script, "args": args }))).await
    }

    /// Runs an async `script`: it gets a callback as its last argument.
    pub async fn js_async(&self, script: &str, args: Value) -> Value {
        self.call(reqwest::Method::POST, "/execute/async", Some(json!({ "script": script, "args": args }))).await
    }

    /// The element matching `css`, if there is one now.
    pub async fn find(&self, css: &str) -> Option<String> {
        let url = format!("{}/session/{}/elements", self.base, self.session);
        let res = self.http.post(&url).json(&json!({"using": "css selector", "value": css})).send().await.unwrap();
        let value: Value = res.json().await.unwrap();
        value["value"].as_array()?.first().map(|e| e[ELEMENT].as_str().unwrap().to_string())
    }

    /// How many elements match `css`.
    pub async fn count(&self, css: &str) -> usize {
        let v =
            self.call(reqwest::Method::POST, "/elements", Some(json!({"using": "css selector", "value": css}))).await;
        v.as_array().map(Vec::len).unwrap_or(0)
    }

    /// Waits for an element matching `css`.
    pub async fn wait(&self, css: &str) -> String {
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

    pub async fn click(&self, css: &str) {
        let e = self.wait(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{e}/click"), Some(json!({}))).await;
    }

    /// Replaces the text of an input or textarea.
    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self.wait(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{e}/clear"), Some(json!({}))).await;
        self.call(reqwest::Method::POST, &format!("/element/{e}/value"), Some(json!({ "text": text }))).await;
    }

    /// The visible text of the first element matching `css` (empty when there is none).
    pub async fn text(&self, css: &str) -> String {
        match self.find(css).await {
            Some(e) => self
                .call(reqwest::Method::GET, &format!("/element/{e}/text"), None)
                .await
                .as_str()
                .unwrap_or("")
                .to_string(),
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
        let b64 = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD.decode(b64.as_str().unwrap()).unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // End the session (closes Chromium cleanly), then kill the process group whatever
        // happened: chromedriver and every Chromium process it started.
        let url = format!("{}/session/{}", self.base, self.session);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
                let _ = client.delete(url).send().await;
            })
        })
        .join();
        let pgid = self.driver.id();
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pgid}")]).status();
        let _ = self.driver.wait();
    }
}
