//! The sandboxed runtime against real guests built from source: echo round trips, every
//! kind of misbehaviour ends as its own typed error within its limit, the runtime keeps
//! serving afterwards, and a guest sees no host file, directory, variable or socket.

#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing

use sandserve_host::runtime::{
    empty_nn, ElementType, LoadedHandler, Request, RequestLimits, Runtime, RuntimeConfig,
    RuntimeError, Tensor,
};
use sandserve_tests::{f32_tensor, guest_wasm, strings};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn runtime() -> &'static Runtime {
    sandserve_tests::test_runtime()
}

fn load(name: &str) -> LoadedHandler {
    runtime()
        .load(&format!("test/{name}@1"), &guest_wasm(name))
        .unwrap_or_else(|e| panic!("{name} loads: {e}"))
}

fn echo() -> &'static LoadedHandler {
    static ECHO: OnceLock<LoadedHandler> = OnceLock::new();
    ECHO.get_or_init(|| load("echo"))
}

fn request(inputs: Vec<Tensor>) -> Request {
    Request {
        inputs,
        parameters: None,
        raw_body: None,
    }
}

fn limits() -> RequestLimits {
    RequestLimits {
        timeout: Duration::from_secs(10),
        max_memory_bytes: 64 << 20,
        ..RequestLimits::default()
    }
}

/// A normal request right after a failure must succeed on the same runtime.
fn assert_echo_still_works() {
    let input = f32_tensor("x", &[3], &[1.0, 2.0, 3.0]);
    let out = echo()
        .invoke(&request(vec![input.clone()]), &limits(), empty_nn())
        .expect("echo works after a misbehaving guest");
    assert_eq!(out.response.outputs[0], input);
}

fn every_element_type() -> Vec<Tensor> {
    let tensor = |name: &str, element_type, shape: &[u64], data: Vec<u8>| Tensor {
        name: name.into(),
        shape: shape.to_vec(),
        element_type,
        data,
    };
    let bytes_data = [b"alpha".as_slice(), b"", "\u{e9}t\u{e9}".as_bytes()]
        .iter()
        .flat_map(|s| {
            (s.len() as u32)
                .to_le_bytes()
                .into_iter()
                .chain(s.iter().copied())
        })
        .collect();
    vec![
        tensor("bool", ElementType::Bool, &[3], vec![1, 0, 1]),
        tensor("u8", ElementType::U8, &[2, 2], vec![0, 1, 254, 255]),
        tensor(
            "u16",
            ElementType::U16,
            &[2],
            [7u16, 65535].iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        tensor(
            "u32",
            ElementType::U32,
            &[1],
            u32::MAX.to_le_bytes().to_vec(),
        ),
        tensor(
            "u64",
            ElementType::U64,
            &[2],
            [0u64, u64::MAX]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        tensor("i8", ElementType::I8, &[2], vec![0x80, 0x7f]),
        tensor(
            "i16",
            ElementType::I16,
            &[1],
            (-300i16).to_le_bytes().to_vec(),
        ),
        tensor(
            "i32",
            ElementType::I32,
            &[1, 1],
            i32::MIN.to_le_bytes().to_vec(),
        ),
        tensor(
            "i64",
            ElementType::I64,
            &[2],
            [-1i64, i64::MAX]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        tensor(
            "f16",
            ElementType::F16,
            &[2],
            [0x3c00u16, 0xc000]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        tensor(
            "bf16",
            ElementType::Bf16,
            &[1],
            0x3f80u16.to_le_bytes().to_vec(),
        ),
        f32_tensor(
            "f32",
            &[2, 3],
            &[0.5, -1.25, 3.0, f32::MAX, f32::MIN_POSITIVE, -0.0],
        ),
        tensor(
            "f64",
            ElementType::F64,
            &[1],
            std::f64::consts::PI.to_le_bytes().to_vec(),
        ),
        tensor("bytes", ElementType::Bytes, &[3], bytes_data),
        tensor(
            "scalar",
            ElementType::F32,
            &[],
            42f32.to_le_bytes().to_vec(),
        ),
    ]
}

#[test]
fn echo_round_trips_tensors_of_every_element_type() {
    let inputs = every_element_type();
    let mut req = request(inputs.clone());
    req.parameters = Some(r#"{"temperature":0.5}"#.into());
    let out = echo()
        .invoke(&req, &limits(), empty_nn())
        .expect("echo answers");
    let outputs = &out.response.outputs;
    assert_eq!(&outputs[..inputs.len()], inputs.as_slice());
    let counts = outputs.last().expect("element_counts output");
    assert_eq!(counts.name, "element_counts");
    assert_eq!(counts.element_type, ElementType::U64);
    let expected: Vec<u8> = inputs
        .iter()
        .flat_map(|t| t.shape.iter().product::<u64>().to_le_bytes())
        .collect();
    assert_eq!(counts.data, expected);
    assert_eq!(
        out.response.parameters.as_deref(),
        Some(r#"{"temperature":0.5}"#)
    );
}

#[test]
fn echo_refuses_a_tensor_whose_data_does_not_fit_its_shape() {
    let bad = Tensor {
        name: "x".into(),
        shape: vec![2, 2],
        element_type: ElementType::F32,
        data: vec![0; 12],
    };
    match echo().invoke(&request(vec![bad]), &limits(), empty_nn()) {
        Err(RuntimeError::InvalidInput(message)) => {
            assert!(
                message.contains("`x`") && message.contains("16"),
                "{message}"
            );
        }
        other => panic!("expected invalid input, got {other:?}"),
    }
    match echo().invoke(&request(vec![]), &limits(), empty_nn()) {
        Err(e @ RuntimeError::InvalidInput(_)) => assert!(e.is_client_error()),
        other => panic!("expected invalid input, got {other:?}"),
    }
}

/// Runs `request` with a `deadline` timeout, checks that it timed out naming that deadline,
/// and returns how long it took.
fn timed_out_after(handler: &LoadedHandler, request: &Request, deadline: Duration) -> Duration {
    let started = Instant::now();
    let result = handler.invoke(
        request,
        &RequestLimits {
            timeout: deadline,
            ..limits()
        },
        empty_nn(),
    );
    let took = started.elapsed();
    assert!(
        matches!(result, Err(RuntimeError::Timeout { timeout }) if timeout == deadline),
        "{result:?}"
    );
    took
}

#[test]
fn an_infinite_loop_is_stopped_at_its_deadline() {
    let spin = load("infinite-loop");
    let deadline = Duration::from_millis(1000);
    for _ in 0..2 {
        let took = timed_out_after(&spin, &request(vec![]), deadline);
        // Not before its deadline; and stopped, not hung. How soon after the deadline is
        // the scheduler's business: a guest past 20 ms of CPU runs in the idle class
        // (runtime::priority), which a loaded machine may starve for seconds.
        assert!(
            took >= deadline,
            "stopped after {took:?}, before its deadline"
        );
        assert!(
            took < deadline * 20,
            "stopped after {took:?}, deadline {deadline:?}"
        );
        assert_echo_still_works();
    }
}

/// Short requests first: a guest that keeps the CPU past `priority::LONG_RUN`, on a thread
/// that allows it, moves its thread to the idle scheduling class (and is still stopped at
/// its deadline); a short request leaves its thread's priority alone, and so does a long
/// one on a thread that does not allow it (the async workers).
#[test]
fn a_long_running_guest_demotes_a_thread_that_allows_it_and_a_short_one_does_not() {
    use sandserve_host::runtime::priority;
    let spin = load("infinite-loop");
    let deadline = Duration::from_millis(400);
    let (short, long, kept) = std::thread::spawn(move || {
        priority::allow_demotion_of_this_thread();
        let input = f32_tensor("x", &[1], &[1.0]);
        echo()
            .invoke(&request(vec![input]), &limits(), empty_nn())
            .expect("echo answers");
        let short = priority::this_thread_is_demoted();
        timed_out_after(&spin, &request(vec![]), deadline);
        let long = priority::this_thread_is_demoted();
        // SAFETY: reads the calling thread's scheduling policy; no pointers involved.
        let policy = unsafe { libc::sched_getscheduler(0) };
        let kept = std::thread::spawn(move || {
            timed_out_after(&spin, &request(vec![]), deadline);
            priority::this_thread_is_demoted()
        })
        .join()
        .expect("joined");
        assert_eq!(policy, libc::SCHED_IDLE, "the demoted thread is SCHED_IDLE");
        (short, long, kept)
    })
    .join()
    .expect("joined");
    assert!(!short, "a short request keeps its thread's priority");
    assert!(long, "a long run demotes a thread that allows it");
    assert!(!kept, "a thread that does not allow it is never demoted");
}

/// A guest asleep in a WASI wait is in host code, where the epoch deadline does not reach:
/// its wait is cut at the request's deadline, so it still ends then and gives its thread
/// back. A short sleep still sleeps.
#[test]
fn a_guest_sleeping_in_wasi_is_stopped_at_its_deadline() {
    let sleeper = load("slow-on-request");
    let asking = |sleep_ms: u64| Request {
        inputs: vec![f32_tensor("x", &[1], &[1.0])],
        parameters: Some(format!(r#"{{"sleep_ms": {sleep_ms}}}"#)),
        raw_body: None,
    };
    // An hour's sleep.
    let took = timed_out_after(&sleeper, &asking(3_600_000), Duration::from_millis(500));
    assert!(took < Duration::from_secs(60), "ended after {took:?}");
    let started = Instant::now();
    let slept = sleeper
        .invoke(&asking(50), &limits(), empty_nn())
        .expect("a short sleep completes");
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert_eq!(slept.response.outputs[0].name, "x");
    assert_echo_still_works();
}

#[test]
fn a_sandbox_instantiated_ahead_gets_the_deadline_of_its_call() {
    let short = RequestLimits {
        timeout: Duration::from_millis(100),
        ..limits()
    };
    // Prepared, then left waiting past its instantiation deadline: the call re-arms it.
    let ready = echo().instantiate_ahead(&short, empty_nn()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let input = f32_tensor("x", &[2], &[4.0, 5.0]);
    let finished = echo().run(Some(ready), &request(vec![input.clone()]), &short, empty_nn);
    let invocation = finished.outcome.expect("a waiting spare still runs");
    assert_eq!(invocation.response.outputs[0], input);
    // A spinning guest in a prepared sandbox is still stopped at the call's deadline.
    let spin = load("infinite-loop");
    let ready = spin.instantiate_ahead(&limits(), empty_nn()).unwrap();
    let finished = spin.run(Some(ready), &request(vec![]), &short, empty_nn);
    assert!(
        matches!(finished.outcome, Err(RuntimeError::Timeout { timeout }) if timeout == short.timeout),
        "{:?}",
        finished.outcome
    );
    drop(finished.spent);
    assert_echo_still_works();
}

#[test]
fn a_memory_bomb_hits_its_memory_limit() {
    let bomb = load("memory-bomb");
    let result = bomb.invoke(&request(vec![]), &limits(), empty_nn());
    match result {
        Err(RuntimeError::MemoryLimit {
            limit_bytes,
            requested_bytes,
        }) => {
            assert_eq!(limit_bytes, 64 << 20);
            assert!(requested_bytes > limit_bytes);
        }
        other => panic!("expected a memory limit error, got {other:?}"),
    }
    assert_echo_still_works();
}

#[test]
fn unbounded_recursion_is_a_stack_overflow() {
    let deep = load("deep-recursion");
    let result = deep.invoke(&request(vec![]), &limits(), empty_nn());
    assert!(
        matches!(result, Err(RuntimeError::StackOverflow)),
        "{result:?}"
    );
    assert_echo_still_works();
}

#[test]
fn a_guest_panic_is_reported_with_its_message() {
    let panics = load("panics");
    let result = panics.invoke(
        &request(vec![f32_tensor("x", &[1], &[1.0])]),
        &limits(),
        empty_nn(),
    );
    match result {
        Err(RuntimeError::GuestPanic { message }) => {
            assert_eq!(message, "fixture panic with 1 inputs");
        }
        other => panic!("expected a guest panic, got {other:?}"),
    }
    assert_echo_still_works();
}

#[test]
fn an_oversized_output_is_refused() {
    let huge = load("huge-output");
    let result = huge.invoke(
        &request(vec![]),
        &RequestLimits {
            max_memory_bytes: 256 << 20,
            max_output_bytes: 16 << 20,
            ..limits()
        },
        empty_nn(),
    );
    match result {
        Err(RuntimeError::OutputTooLarge { bytes, limit }) => {
            assert_eq!(limit, 16 << 20);
            assert!(bytes >= 48 << 20, "{bytes}");
        }
        other => panic!("expected output too large, got {other:?}"),
    }
    assert_echo_still_works();
}

#[test]
fn a_component_with_a_forbidden_import_is_refused_at_load_naming_it() {
    let result = runtime().load("test/forbidden@1", &guest_wasm("forbidden-import"));
    match result {
        Err(ref e @ RuntimeError::ForbiddenImport { ref imports }) => {
            assert_eq!(imports, &vec!["acme:secrets/vault".to_string()]);
            assert!(e.to_string().contains("acme:secrets/vault"), "{e}");
        }
        Err(other) => panic!("expected a forbidden import error, got {other:?}"),
        Ok(_) => panic!("a component importing acme:secrets/vault must not load"),
    }
}

#[test]
fn bytes_that_are_not_a_component_are_refused() {
    for (what, bytes) in [
        ("garbage", b"definitely not wasm".to_vec()),
        ("core module", b"\0asm\x01\0\0\0".to_vec()),
    ] {
        let result = runtime().load("test/bad@1", &bytes);
        assert!(
            matches!(result, Err(RuntimeError::InvalidComponent(_))),
            "{what}: {:?}",
            result.err()
        );
    }
}

#[test]
fn a_guest_sees_no_host_file_directory_variable_or_socket() {
    // Make sure there is something to leak.
    assert!(std::env::var_os("PATH").is_some());
    assert!(std::path::Path::new("/etc/passwd").exists());
    let snoop = load("snoop");
    let out = snoop
        .invoke(&request(vec![]), &limits(), empty_nn())
        .expect("snoop reports");
    let report = strings(&out.response.outputs[0]);
    assert_eq!(report.len(), 12, "{report:#?}");
    for line in &report {
        if line.starts_with("cwd:") {
            // A working directory name is not host data, but it must not be a host path.
            assert!(
                line == "cwd: ok \"/\"" || line.starts_with("cwd: denied"),
                "{line}"
            );
            continue;
        }
        assert!(line.contains(": denied"), "guest reached host data: {line}");
    }
}

#[test]
fn fuel_is_metered_and_enforced_when_enabled() {
    let metered = Runtime::new(RuntimeConfig {
        max_concurrent_instances: 4,
        max_memory_bytes: 128 << 20,
        fuel_metering: true,
        ..RuntimeConfig::default()
    })
    .expect("metered runtime starts");
    let echo = metered
        .load("test/echo@1", &guest_wasm("echo"))
        .expect("echo loads");
    let out = echo
        .invoke(
            &request(vec![f32_tensor("x", &[1], &[1.0])]),
            &limits(),
            empty_nn(),
        )
        .expect("echo answers");
    let used = out.fuel_consumed.expect("fuel is reported");
    assert!(used > 1_000, "echo used {used} fuel");

    let spin = metered
        .load("test/spin@1", &guest_wasm("infinite-loop"))
        .expect("loop loads");
    let budget = 5_000_000;
    let result = spin.invoke(
        &request(vec![]),
        &RequestLimits {
            fuel: Some(budget),
            timeout: Duration::from_secs(30),
            ..limits()
        },
        empty_nn(),
    );
    assert!(
        matches!(result, Err(RuntimeError::FuelExhausted { fuel }) if fuel == budget),
        "{result:?}"
    );
}

#[test]
fn concurrent_requests_each_get_their_own_sandbox() {
    let threads: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let value = i as f32;
                let input = f32_tensor("x", &[1], &[value]);
                let out = echo()
                    .invoke(&request(vec![input.clone()]), &limits(), empty_nn())
                    .expect("echo answers");
                assert_eq!(out.response.outputs[0], input);
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread finishes");
    }
}

#[test]
fn a_full_sandbox_pool_is_exhausted_not_a_trap() {
    // A runtime of its own with a single slot: the second sandbox finds the pool full.
    let runtime = Runtime::new(RuntimeConfig {
        max_concurrent_instances: 1,
        max_memory_bytes: 64 << 20,
        ..RuntimeConfig::default()
    })
    .expect("runtime starts");
    let echo = runtime
        .load("test/echo@1", &guest_wasm("echo"))
        .expect("echo loads");
    let held = echo
        .instantiate_ahead(&limits(), empty_nn())
        .expect("the one slot is free");
    let error = echo
        .invoke(
            &request(vec![f32_tensor("x", &[1], &[1.0])]),
            &limits(),
            empty_nn(),
        )
        .expect_err("the pool is full");
    assert!(
        matches!(&error, RuntimeError::Exhausted(why) if why.contains("maximum concurrent limit")),
        "{error:?}"
    );
    drop(held);
    let input = f32_tensor("x", &[1], &[2.0]);
    let out = echo
        .invoke(&request(vec![input.clone()]), &limits(), empty_nn())
        .expect("the slot is free again");
    assert_eq!(out.response.outputs[0], input);
}
