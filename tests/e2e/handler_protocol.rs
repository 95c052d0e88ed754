//! The handler process on its own: start-up settings, readiness, envelope errors, routing and
//! shutdown, spoken to directly as the Functions host would.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_qualtrics-bridge");

struct Handler {
    child: std::process::Child,
    base: String,
}

impl Handler {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(BIN)
            .env_clear()
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .env(
                "BRIDGE_CONFIG",
                concat!(env!("CARGO_MANIFEST_DIR"), "/bridge.toml"),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "handler did not listen"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        Self { child, base }
    }
}

impl Drop for Handler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_without(env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(BIN)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn missing_or_invalid_port_exits_non_zero_naming_the_variable() {
    for env in [
        &[][..],
        &[("FUNCTIONS_CUSTOMHANDLER_PORT", "abc")],
        &[("FUNCTIONS_CUSTOMHANDLER_PORT", "0")],
        &[("FUNCTIONS_CUSTOMHANDLER_PORT", "70000")],
    ] {
        let (ok, stderr) = run_without(env);
        assert!(!ok, "{env:?}");
        assert!(
            stderr.contains("FUNCTIONS_CUSTOMHANDLER_PORT"),
            "{env:?}: {stderr}"
        );
    }
}

#[test]
fn broken_bridge_config_is_refused_at_start_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bridge.toml");
    std::fs::write(&path, "[[surveys]]\nid = \"SV_1\"\nexport = 3\n").unwrap();
    let (ok, stderr) = run_without(&[
        ("FUNCTIONS_CUSTOMHANDLER_PORT", "1"),
        ("BRIDGE_CONFIG", path.to_str().unwrap()),
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("bridge.toml") && stderr.contains("line 3") && stderr.contains("export"),
        "{stderr}"
    );
}

#[tokio::test]
async fn envelope_errors_fail_the_invocation_with_a_reason() {
    let h = Handler::start();
    let http = reqwest::Client::new();
    let post = |path: &str, body: &'static str, id: bool| {
        let mut r = http.post(format!("{}{path}", h.base)).body(body);
        if id {
            r = r.header(
                "x-azure-functions-invocationid",
                "00000000-0000-0000-0000-000000000001",
            );
        }
        r.send()
    };
    // Ready answers cheaply.
    let ready = http.get(format!("{}/", h.base)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.headers()["content-type"], "application/json");

    // `want` is a fragment of the handler's own reason, on purpose: the status alone cannot
    // show *which* check refused the envelope (they all fail the invocation), and the reason
    // is what an operator reads in the host's log. A rewording updates this table.
    for (path, body, want) in [
        ("/TicketCreator", "not json", "not a JSON envelope"),
        ("/TicketCreator", r#"{"Data":{}}"#, "no Data.request"),
        (
            "/TicketCreator",
            r#"{"Data":{"request":"{\"v\":1}"},"Metadata":{"DequeueCount":"1"}}"#,
            "double-encodes",
        ),
        (
            "/TicketCreator",
            r#"{"Data":{"request":"\"x\""},"Metadata":{}}"#,
            "DequeueCount",
        ),
        (
            "/QualtricsWebhook",
            r#"{"Data":{"req":{"Headers":{}}}}"#,
            "Data.req",
        ),
        ("/ExportPoller", r#"{"Data":{"timer":"x"}}"#, "TimerInfo"),
    ] {
        let resp = post(path, body, true).await.unwrap();
        assert!(!resp.status().is_success(), "{path} {body}");
        assert_eq!(resp.headers()["content-type"], "application/json");
        let text = resp.text().await.unwrap();
        assert!(text.contains(want), "{path} {body}: {text}");
    }
    // Unknown functions 404; a request without the host's invocation id is refused.
    assert_eq!(post("/Nope", "{}", true).await.unwrap().status(), 404);
    assert_eq!(
        post("/TicketCreator", "{}", false).await.unwrap().status(),
        400
    );
    // A good envelope: 200, JSON, a non-empty object with a string statusCode inside res.
    let resp = post(
        "/QualtricsWebhook",
        r#"{"Data":{"req":{"Method":"GET","Headers":{}}},"Metadata":{}}"#,
        true,
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["Outputs"]["res"]["statusCode"], "200");
    assert_eq!(v["ReturnValue"], serde_json::Value::Null);
}

#[test]
fn sigterm_stops_the_handler_cleanly() {
    let mut h = Handler::start();
    // SAFETY: signalling our own child.
    unsafe {
        libc_kill(h.child.id() as i32, 15);
    }
    let start = Instant::now();
    loop {
        if let Some(status) = h.child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "handler ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}
