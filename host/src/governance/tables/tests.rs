use super::*;

fn row(i: u64, payload: &str) -> Row {
    Row {
        timestamp_ms: now_ms() + i,
        request_id: None,
        client_request_id: Some(format!("c{i}")),
        served_entity_name: Some("e".into()),
        status_code: 200,
        execution_time_ms: 1.0,
        request: payload.into(),
        request_truncated: false,
        response: None,
        response_truncated: false,
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
        tables.submit("t", "ep", &row(i, &payload));
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
        tables.submit("t", "ep", &row(i, "a"));
        tables.sync();
        std::thread::sleep(Duration::from_millis(2));
    }
    tables.submit("t", "ep", &row(3, "a"));
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
        tables.submit("t", "ep", &row(i, "a"));
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
    tables.submit("t", "ep", &row(0, "a"));
    tables.submit("t", "other", &row(1, "b"));
    tables.remove("t", "ep");
    assert_eq!(tables.read("t", "ep", 0, u64::MAX, 10).unwrap().0.len(), 0);
    assert_eq!(
        tables.read("t", "other", 0, u64::MAX, 10).unwrap().0.len(),
        1
    );
    tables.submit("t", "ep", &row(2, "c"));
    let (rows, _) = tables.read("t", "ep", 0, u64::MAX, 10).unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].contains("\"c2\""));
}
