//! Readiness and graceful drain of the real binary: `/readyz` answers 200 once the server
//! listens; on SIGTERM a request in flight (its body still arriving) finishes with its
//! real answer, no new connection is accepted, and the process exits 0; a request that
//! never finishes holds the exit back for `--drain-timeout-secs` and no longer.

#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing

use sandserve_tests::packages::example_package;
use sandserve_tests::server::{TenantServer, TestServer};
use serde_json::{json, Value};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn addr(server: &TestServer) -> SocketAddr {
    server.url.strip_prefix("http://").unwrap().parse().unwrap()
}

/// An echo endpoint `ep` on a fresh server with `args`.
fn echo_server(args: &[&str]) -> TenantServer {
    let tenant = TenantServer::start(args);
    let (status, body) = tenant.client.upload("echo", &example_package("echo"));
    assert_eq!(status, 201, "{body}");
    let (status, body) = tenant.client.post(
        "/api/2.0/serving-endpoints",
        &json!({"name": "ep", "config": {"served_entities": [
            {"name": "echo-1", "entity_name": "echo", "entity_version": "1"}]}}),
    );
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = tenant.client.get("/api/2.0/serving-endpoints/ep");
        assert_eq!(status, 200, "{body}");
        if body["state"]["ready"] == "READY" && body["state"]["config_update"] == "NOT_UPDATING" {
            return tenant;
        }
        assert!(Instant::now() < deadline, "never ready: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Opens a query whose body is only half sent; returns the stream and the rest.
fn half_sent_query(server: &TestServer, token: &str, body: &[u8]) -> (TcpStream, Vec<u8>) {
    let mut stream = TcpStream::connect(addr(server)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let head = format!(
        "POST /serving-endpoints/ep/invocations HTTP/1.1\r\nHost: sandserve\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         x-request-id: drain-test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let half = body.len() / 2;
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body[..half]).unwrap();
    stream.flush().unwrap();
    (stream, body[half..].to_vec())
}

/// Reads one HTTP/1.1 answer with a Content-Length: its status and JSON body.
fn read_answer(stream: &mut TcpStream) -> (u16, Value) {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let text = String::from_utf8_lossy(&raw).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = &text[..end];
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .expect("a content-length");
            if raw.len() >= end + 4 + length {
                let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                let body = serde_json::from_slice(&raw[end + 4..end + 4 + length]).unwrap();
                return (status, body);
            }
        }
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed before the answer: {text}");
        raw.extend_from_slice(&chunk[..n]);
    }
}

/// Waits until a new connection to `server` is refused.
fn wait_refused(server: &TestServer) -> Duration {
    let started = Instant::now();
    loop {
        match TcpStream::connect_timeout(&addr(server), Duration::from_millis(500)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return started.elapsed(),
            // A loaded machine may leave a connect unanswered for the 500 ms: try again.
            Err(e) if e.kind() == ErrorKind::TimedOut => assert!(
                started.elapsed() < Duration::from_secs(5),
                "still not refusing connections 5 s after SIGTERM"
            ),
            // A connect that lands in the backlog as the listener closes is reset: the
            // socket is going away; the next attempt must be refused.
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "connections still reset rather than refused 5 s after SIGTERM"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("connect failed otherwise than refused: {e}"),
            Ok(_) => {
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "still accepting connections 5 s after SIGTERM"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

#[test]
fn sigterm_finishes_the_request_in_flight_refuses_new_connections_and_exits_zero() {
    let mut tenant = echo_server(&[]);
    let (status, ready) = tenant.server.admin().get("/readyz");
    assert_eq!((status, &ready), (200, &json!({"status": "ready"})));
    let (status, _) = tenant.server.admin().get("/v2/health/ready");
    assert_eq!(status, 200);

    let values: Vec<f64> = (0..2000).map(|i| f64::from(i) * 0.5).collect();
    let body = serde_json::to_vec(&json!({"inputs": {"x": values}})).unwrap();
    let (mut stream, rest) = half_sent_query(&tenant.server, &tenant.token, &body);
    std::thread::sleep(Duration::from_millis(200));

    tenant.server.signal_terminate();
    let refused_after = wait_refused(&tenant.server);
    assert!(refused_after < Duration::from_secs(5), "{refused_after:?}");
    // The request in flight holds the exit back.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        tenant.server.exit_status().is_none(),
        "the server exited with a request in flight"
    );

    stream.write_all(&rest).unwrap();
    let (status, answer) = read_answer(&mut stream);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["predictions"]["x"],
        json!(values),
        "the echo of what was sent"
    );

    let exit = tenant
        .server
        .wait_exit(Duration::from_secs(15))
        .expect("the server exits once the request in flight is answered");
    assert_eq!(exit.code(), Some(0), "{exit}");
}

#[test]
fn a_request_that_never_finishes_holds_the_exit_for_the_drain_timeout_only() {
    let mut tenant = echo_server(&["--drain-timeout-secs", "2"]);
    let body = serde_json::to_vec(&json!({"inputs": {"x": [1.0, 2.0, 3.0, 4.0]}})).unwrap();
    let (_stream, _never_sent) = half_sent_query(&tenant.server, &tenant.token, &body);
    std::thread::sleep(Duration::from_millis(200));

    let signalled = Instant::now();
    tenant.server.signal_terminate();
    wait_refused(&tenant.server);
    let exit = tenant
        .server
        .wait_exit(Duration::from_secs(10))
        .expect("the drain timeout ends the wait");
    let took = signalled.elapsed();
    assert_eq!(exit.code(), Some(0), "{exit}");
    assert!(
        took >= Duration::from_millis(1800),
        "exited after {took:?}: it did not wait for the request in flight"
    );
    assert!(took < Duration::from_secs(6), "exited only after {took:?}");
}
