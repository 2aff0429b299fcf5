//! Headless Chromium for the UI tests, driven over WebDriver with fantoccini.
//!
//! * [`Browser::start`] runs `chromedriver --port=0` (it takes a free
//!   loopback port itself and prints which, so there is no port race), then
//!   opens a session on `/usr/bin/chromium` in headless mode with a profile
//!   directory of its own.
//! * It is blocking like the rest of `common`: the browser owns a small tokio
//!   runtime and each method waits for one WebDriver round trip, so tests stay
//!   plain `#[test]` functions mixing it freely with [`TestServer`] and the
//!   blocking HTTP helpers. [`Browser::block_on`] and [`Browser::client`] give
//!   the whole fantoccini API for anything not wrapped here.
//! * Waits are on conditions, with a time limit ([`Browser::wait_until`]).
//! * [`Browser::screenshot`] saves `target/screenshots/<name>.png`; a test
//!   that panics with a browser open leaves `<test name>-failure.png` there.
//! * Dropping it ends the session (Chromium quits and its profile is deleted)
//!   and kills chromedriver's process group.
//!
//! [`TestServer`]: super::TestServer

use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use tempfile::TempDir;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const DESKTOP: (u32, u32) = (1280, 900);
pub const PHONE: (u32, u32) = (375, 812);

/// How long element look-ups and ordinary waits may take.
pub const WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(100);
const DRIVER_START: Duration = Duration::from_secs(30);
const INSTALL_HINT: &str =
    "run ./scripts/test.sh, which installs them (apt-get install chromium chromium-driver)";

/// One headless Chromium with its chromedriver, owned by one test.
pub struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    driver_log: Arc<Mutex<Vec<String>>>,
    _profile: TempDir,
}

impl Browser {
    /// Start chromedriver and a headless Chromium at desktop size. Fails the
    /// test (never skips it) when either is not installed.
    pub fn start() -> Browser {
        assert!(
            Path::new(CHROMIUM).is_file(),
            "{CHROMIUM} is missing; the browser tests need Chromium: {INSTALL_HINT}"
        );
        let chromedriver = on_path("chromedriver").unwrap_or_else(|| {
            panic!("`chromedriver` is not on PATH; the browser tests need it: {INSTALL_HINT}")
        });
        let profile = tempfile::Builder::new()
            .prefix("slipway-chromium-")
            .tempdir()
            .unwrap();

        let mut driver = Command::new(&chromedriver)
            .arg("--port=0")
            .arg("--log-level=WARNING")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so drop can end Chromium with it.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        let driver_log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        drain(
            driver.stdout.take().unwrap(),
            driver_log.clone(),
            tx.clone(),
        );
        drain(driver.stderr.take().unwrap(), driver_log.clone(), tx);
        let port = wait_for_port(&mut driver, &rx, &driver_log);

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut browser = Browser {
            rt,
            client: None,
            driver,
            driver_log,
            _profile: profile,
        };
        let (w, h) = DESKTOP;
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    // Root (as in CI) cannot use Chromium's sandbox.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    format!("--window-size={w},{h}"),
                    format!("--user-data-dir={}", browser._profile.path().display()),
                    "--no-first-run",
                    "--no-default-browser-check",
                ],
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let session = browser.rt.block_on(async {
            tokio::time::timeout(
                DRIVER_START,
                ClientBuilder::new(connector)
                    .capabilities(capabilities)
                    .connect(&format!("http://127.0.0.1:{port}")),
            )
            .await
        });
        match session {
            Ok(Ok(client)) => browser.client = Some(client),
            Ok(Err(e)) => panic!(
                "chromedriver could not start {CHROMIUM}: {e}\n{}",
                browser.driver_output()
            ),
            Err(_) => panic!(
                "no browser session within {DRIVER_START:?}\n{}",
                browser.driver_output()
            ),
        }
        browser
    }

    /// The fantoccini client, for anything not wrapped here (use inside
    /// [`block_on`](Self::block_on)).
    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("the session is open")
    }

    /// Run a future on the browser's runtime.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Navigate and wait for the page to load.
    pub fn goto(&self, url: &str) {
        self.block_on(self.client().goto(url))
            .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    }

    /// Path and query of the current page (`/signin?next=/`).
    pub fn path(&self) -> String {
        let url = self
            .block_on(self.client().current_url())
            .expect("the current URL");
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// Run `script` (a function body: `return ...;`) in the page with `args`
    /// (`arguments[0]`, ...), returning what it returns.
    pub fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.block_on(self.client().execute(script, args))
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Evaluate a JavaScript expression.
    pub fn eval(&self, expression: &str) -> Value {
        self.js(&format!("return ({expression});"), vec![])
    }

    fn try_eval(&self, expression: &str) -> Result<Value, String> {
        let script = format!("return ({expression});");
        self.block_on(self.client().execute(&script, vec![]))
            .map_err(|e| e.to_string())
    }

    /// Poll a JavaScript expression until it is truthy and return its value;
    /// fail with its last value after `limit`.
    pub fn wait_until(&self, what: &str, limit: Duration, expression: &str) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            // A script fails while a page is being replaced; that is "not yet".
            let last = match self.try_eval(expression) {
                Ok(v) if truthy(&v) => return v,
                Ok(v) => v.to_string(),
                Err(e) => format!("an error: {e}"),
            };
            if Instant::now() > deadline {
                panic!(
                    "{what}: not true within {limit:?} on {}; `{expression}` was {last}",
                    self.path()
                );
            }
            self.block_on(async { tokio::time::sleep(POLL).await });
        }
    }

    /// Wait (up to [`WAIT`]) for an element matching `css`.
    pub fn find(&self, css: &str) -> Element {
        self.block_on(
            self.client()
                .wait()
                .at_most(WAIT)
                .every(POLL)
                .for_element(Locator::Css(css)),
        )
        .unwrap_or_else(|e| panic!("no `{css}` on {} within {WAIT:?}: {e}", self.path()))
    }

    /// The rendered text of the element matching `css`.
    pub fn text(&self, css: &str) -> String {
        let e = self.find(css);
        self.block_on(e.text()).unwrap()
    }

    /// An attribute of the element matching `css`.
    pub fn attr(&self, css: &str, name: &str) -> Option<String> {
        let e = self.find(css);
        self.block_on(e.attr(name)).unwrap()
    }

    /// Type `text` into the field matching `css`.
    pub fn fill(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.block_on(async {
            e.clear().await?;
            e.send_keys(text).await
        })
        .unwrap_or_else(|e| panic!("cannot type into `{css}`: {e}"));
    }

    /// Click the element matching `css`.
    pub fn click(&self, css: &str) {
        let e = self.find(css);
        self.block_on(e.click())
            .unwrap_or_else(|e| panic!("cannot click `{css}`: {e}"));
    }

    /// Press and release one key on the keyboard (goes to the focused element).
    pub fn press(&self, key: Key) {
        let key: char = key.into();
        let actions = KeyActions::new("keyboard".into())
            .then(KeyAction::Down { value: key })
            .then(KeyAction::Up { value: key });
        self.block_on(self.client().perform_actions(actions))
            .expect("press a key");
    }

    /// A short description of `document.activeElement`, such as `body`,
    /// `main#main`, `a.skip "Skip to content"` or `button "Sign out"` (the
    /// label only for controls).
    pub fn focused(&self) -> String {
        self.eval(
            r##"(() => {
                const e = document.activeElement;
                if (!e) return "nothing";
                let d = e.tagName.toLowerCase();
                if (e.id) d += "#" + e.id;
                for (const c of e.classList) d += "." + c;
                const control = /^(A|BUTTON|INPUT|SELECT|TEXTAREA|SUMMARY)$/.test(e.tagName);
                const label = control ? (e.innerText || e.value || "").trim().slice(0, 40) : "";
                return label ? d + ' "' + label + '"' : d;
            })()"##,
        )
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Resize so the page's viewport is `width` x `height` CSS pixels.
    pub fn set_viewport(&self, (width, height): (u32, u32)) {
        let client = self.client();
        self.block_on(client.set_window_size(width, height))
            .expect("resize the window");
        // The window may be larger than its viewport: make up the difference.
        let inner = self.eval("[window.innerWidth, window.innerHeight]");
        let (iw, ih) = (inner[0].as_u64().unwrap(), inner[1].as_u64().unwrap());
        if (iw, ih) != (width as u64, height as u64) {
            let w = width + (width as u64).saturating_sub(iw) as u32;
            let h = height + (height as u64).saturating_sub(ih) as u32;
            self.block_on(client.set_window_size(w, h))
                .expect("resize the window");
        }
        self.wait_until(
            &format!("a {width}x{height} viewport"),
            WAIT,
            &format!("window.innerWidth === {width} && window.innerHeight === {height}"),
        );
    }

    /// Save a PNG of the viewport to `target/screenshots/<name>.png`.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let png = self
            .block_on(self.client().screenshot())
            .expect("take a screenshot");
        assert!(png.starts_with(b"\x89PNG"), "a screenshot is a PNG");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
        path
    }

    /// Everything chromedriver printed so far.
    pub fn driver_output(&self) -> String {
        format!(
            "---- chromedriver output ----\n{}\n---- end of chromedriver output ----",
            self.driver_log.lock().unwrap().join("\n")
        )
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if std::thread::panicking() {
                let name = std::thread::current()
                    .name()
                    .unwrap_or("browser")
                    .replace("::", "-");
                let shot = self
                    .rt
                    .block_on(async { tokio::time::timeout(WAIT, client.screenshot()).await });
                if let Ok(Ok(png)) = shot {
                    let dir = screenshot_dir();
                    let path = dir.join(format!("{name}-failure.png"));
                    if std::fs::create_dir_all(&dir).is_ok() && std::fs::write(&path, png).is_ok() {
                        eprintln!("screenshot of the failure: {}", path.display());
                    }
                }
                eprintln!("{}", self.driver_output());
            }
            // Ending the session makes chromedriver quit Chromium.
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(WAIT, client.close()).await });
        }
        // Whatever is left of chromedriver and Chromium: their process group.
        unsafe { libc::kill(-(self.driver.id() as libc::pid_t), libc::SIGKILL) };
        let _ = self.driver.wait();
    }
}

/// `target/screenshots`, under `CARGO_TARGET_DIR` when that is set.
pub fn screenshot_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| option_env!("CARGO_TARGET_DIR").map(PathBuf::from))
        .map(|t| {
            if t.is_absolute() {
                t
            } else {
                workspace.join(t)
            }
        })
        .unwrap_or_else(|| workspace.join("target"));
    target.join("screenshots")
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// Wait for chromedriver's `started successfully on port N` line.
fn wait_for_port(
    driver: &mut Child,
    lines: &mpsc::Receiver<String>,
    log: &Mutex<Vec<String>>,
) -> u16 {
    let re = regex::Regex::new(r"started successfully on port (\d+)").unwrap();
    let deadline = Instant::now() + DRIVER_START;
    loop {
        match lines.recv_timeout(POLL) {
            Ok(line) => {
                if let Some(c) = re.captures(&line) {
                    return c[1].parse().unwrap();
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = driver.wait().ok();
                panic!(
                    "chromedriver exited ({status:?}) before it was ready:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        }
        if Instant::now() > deadline {
            unsafe { libc::kill(-(driver.id() as libc::pid_t), libc::SIGKILL) };
            let _ = driver.wait();
            panic!(
                "chromedriver did not say it was ready within {DRIVER_START:?}:\n{}",
                log.lock().unwrap().join("\n")
            );
        }
    }
}

fn drain(pipe: impl Read + Send + 'static, log: Arc<Mutex<Vec<String>>>, tx: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            log.lock().unwrap().push(line.clone());
            let _ = tx.send(line);
        }
    });
}
