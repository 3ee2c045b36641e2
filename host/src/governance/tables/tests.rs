use super::*;

fn row(i: u64, payload: &str) -> Capture {
    Capture {
        timestamp_ms: now_ms() + i,
        request_id: None,
        served_entity_name: Some("e".into()),
        status_code: 200,
        execution_time_ms: 1.0,
        request: format!(r#"{{"client_request_id": "c{i}", "p": "{payload}"}}"#).into(),
        client_request_id: None,
        response: None,
        error: None,
    }
}

fn stored_bytes(path: &Path) -> u64 {
    std::fs::read_dir(path.join("t/ep"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

#[test]
fn segments_roll_and_the_oldest_go_past_the_byte_budget() {
    let dir = tempfile::tempdir().unwrap();
    let settings = TableSettings {
        segment_bytes: 1000,
        max_bytes_per_endpoint: 3000,
        ..TableSettings::default()
    };
    let tables = Tables::open(dir.path(), settings).unwrap();
    let payload = "x".repeat(400);
    for i in 0..40 {
        tables.submit("t", "ep", row(i, &payload));
        if i % 5 == 4 {
            // Distinct segment names (they are named by the millisecond they open in).
            tables.sync();
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    tables.sync();
    // The budget plus the open segment.
    assert!(
        stored_bytes(dir.path()) <= 3000 + 1500,
        "{}",
        stored_bytes(dir.path())
    );
    let (rows, more) = tables.read("t", "ep", 0, u64::MAX, 1000).unwrap();
    assert!(!more);
    assert!(rows.len() < 40 && rows.len() >= 5, "{}", rows.len());
    // What is kept is the newest.
    assert!(rows.last().unwrap().contains("\"c39\""));
    assert_eq!(tables.dropped(), 0);
}

#[test]
fn rows_past_the_retention_age_are_deleted_with_their_segment() {
    let dir = tempfile::tempdir().unwrap();
    let settings = TableSettings {
        segment_bytes: 10,
        retention: Duration::ZERO,
        ..TableSettings::default()
    };
    let tables = Tables::open(dir.path(), settings).unwrap();
    for i in 0..3 {
        tables.submit("t", "ep", row(i, "a"));
        tables.sync();
        std::thread::sleep(Duration::from_millis(2));
    }
    tables.submit("t", "ep", row(3, "a"));
    tables.sync();
    // Every closed segment was older than zero seconds: only the open one is left.
    let (rows, _) = tables.read("t", "ep", 0, u64::MAX, 100).unwrap();
    assert!(rows.len() <= 2, "{rows:?}");
    assert!(rows.last().unwrap().contains("\"c3\""));
}

#[test]
fn a_full_queue_drops_rows_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let settings = TableSettings {
        queue_rows: 1,
        ..TableSettings::default()
    };
    let tables = Tables::open(dir.path(), settings).unwrap();
    for i in 0..2000 {
        tables.submit("t", "ep", row(i, "a"));
    }
    tables.sync();
    let (rows, _) = tables.read("t", "ep", 0, u64::MAX, 10_000).unwrap();
    assert!(tables.dropped() > 0);
    assert_eq!(rows.len() as u64 + tables.dropped(), 2000);
}

#[test]
fn payloads_are_cut_at_the_limit() {
    assert_eq!(payload_text(b"abcdef", 4), ("abcd".to_string(), true));
    assert_eq!(payload_text(b"ab", 4), ("ab".to_string(), false));
}

#[test]
fn a_removed_table_is_gone_and_a_new_one_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let tables = Tables::open(dir.path(), TableSettings::default()).unwrap();
    tables.submit("t", "ep", row(0, "a"));
    tables.submit("t", "other", row(1, "b"));
    tables.remove("t", "ep");
    assert_eq!(tables.read("t", "ep", 0, u64::MAX, 10).unwrap().0.len(), 0);
    assert_eq!(
        tables.read("t", "other", 0, u64::MAX, 10).unwrap().0.len(),
        1
    );
    tables.submit("t", "ep", row(2, "c"));
    let (rows, _) = tables.read("t", "ep", 0, u64::MAX, 10).unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].contains("\"c2\""));
}

#[test]
fn a_capture_becomes_a_row_cut_at_the_limit_with_its_client_request_id() {
    let capture = Capture {
        response: Some(Capture::answer_prefix(b"0123456789", 4)),
        ..row(7, "abc")
    };
    assert_eq!(capture.response.as_deref(), Some(&b"01234"[..]));
    let row = capture.into_row(4);
    assert_eq!(row.client_request_id.as_deref(), Some("c7"));
    assert_eq!(
        (row.request.as_str(), row.request_truncated),
        ("{\"cl", true)
    );
    assert_eq!(
        (row.response.as_deref(), row.response_truncated),
        (Some("0123"), true)
    );
    let short = Capture {
        request: Bytes::from_static(b"{}"),
        response: Some(Capture::answer_prefix(b"ok", 4)),
        ..row_without_id()
    }
    .into_row(4);
    assert_eq!(short.client_request_id, None);
    assert_eq!(
        (short.response.as_deref(), short.response_truncated),
        (Some("ok"), false)
    );
    assert!(!short.request_truncated);
}

fn row_without_id() -> Capture {
    Capture {
        request: Bytes::new(),
        ..row(0, "")
    }
}

#[test]
fn a_row_is_written_without_a_sync_within_the_writer_period() {
    let dir = tempfile::tempdir().unwrap();
    let tables = Tables::open(dir.path(), TableSettings::default()).unwrap();
    tables.submit("t", "ep", row(0, "a"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while stored_bytes_or_zero(dir.path()) == 0 {
        assert!(
            Instant::now() < deadline,
            "the writer never woke up for the row"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn stored_bytes_or_zero(path: &Path) -> u64 {
    if path.join("t/ep").exists() {
        stored_bytes(path)
    } else {
        0
    }
}

#[test]
fn a_capture_keeps_a_large_body_cut_with_its_client_request_id_and_shares_a_small_one() {
    let large = Bytes::from(format!(
        r#"{{"inputs": [{}], "client_request_id": "late-id"}}"#,
        vec!["1"; 10_000].join(", ")
    ));
    let (kept, id) = Capture::request_part(&large, 64);
    // The queue holds 65 bytes, not the body, and the id (past the cut) was read whole.
    assert_eq!(kept.len(), 65);
    assert_eq!(id.as_deref(), Some("late-id"));
    let row = Capture {
        request: kept,
        client_request_id: id,
        ..row(0, "")
    }
    .into_row(64);
    assert!(row.request_truncated);
    assert_eq!(row.client_request_id.as_deref(), Some("late-id"));
    let small = Bytes::from_static(br#"{"client_request_id": "s"}"#);
    let (kept, id) = Capture::request_part(&small, 64);
    assert_eq!(
        kept.as_ptr(),
        small.as_ptr(),
        "a small body is shared, not copied"
    );
    assert_eq!(id, None);
}

#[test]
fn segments_rolled_in_one_burst_get_distinct_names() {
    let dir = tempfile::tempdir().unwrap();
    let settings = TableSettings {
        segment_bytes: 10,
        ..TableSettings::default()
    };
    let tables = Tables::open(dir.path(), settings).unwrap();
    for i in 0..5 {
        tables.submit("t", "ep", row(i, "a"));
    }
    // One wake-up of the writer writes all five, each rolling a segment.
    tables.sync();
    let files = std::fs::read_dir(dir.path().join("t/ep")).unwrap().count();
    assert_eq!(files, 5);
}
