use super::read::parse;
use super::*;

fn record(i: u64) -> Record {
    Record {
        seq: 0,
        time_micros: 0,
        kind: if i.is_multiple_of(5) {
            RecordKind::Divergence
        } else {
            RecordKind::Missed
        },
        session: i,
        user: "app".into(),
        database: "db".into(),
        prelude: vec!["SET search_path = app".into()],
        messages: format!("Q\0\0\0\x0eINSERT {i}\0").into_bytes(),
        wrap: true,
        in_doubt: false,
        marker: None,
        side: None,
        tables: vec!["t".into()],
        error: "08006 gone".into(),
        primary_result: None,
        secondary_result: None,
    }
}

#[tokio::test]
async fn round_trip_and_seq_continues_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), Duration::from_millis(1))
        .await
        .unwrap();
    for i in 1..=3 {
        assert_eq!(j.append(record(i)).await.unwrap(), i);
    }
    assert_eq!(j.stats().records, 3);
    drop(j);
    let j = Journal::open(dir.path(), Duration::from_millis(1))
        .await
        .unwrap();
    assert_eq!(j.append(record(4)).await.unwrap(), 4);
    let (records, report) = read_records(dir.path()).unwrap();
    assert_eq!(
        records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(records[1].messages, record(2).messages);
    assert_eq!(report.torn_tail_bytes, 0);
}

#[tokio::test]
async fn torn_tail_at_every_offset_is_ignored_and_cut() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), Duration::from_millis(1))
        .await
        .unwrap();
    j.append(record(1)).await.unwrap();
    j.append(record(2)).await.unwrap();
    drop(j);
    let full = std::fs::read(log_path(dir.path())).unwrap();
    let (_, first) = parse(&full)
        .map(|(r, _)| (r.clone(), r[0].clone()))
        .unwrap();
    let mut one = Vec::new();
    encode(&first, &mut one);
    for cut in one.len()..full.len() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(log_path(d.path()), &full[..cut]).unwrap();
        let (records, report) = read_records(d.path()).unwrap();
        assert_eq!(records.len(), 1, "cut at {cut}");
        assert_eq!(report.torn_tail_bytes as usize, cut - one.len());
        let j = Journal::open(d.path(), Duration::from_millis(1))
            .await
            .unwrap();
        assert_eq!(j.append(record(3)).await.unwrap(), 2, "cut at {cut}");
    }
}

#[tokio::test]
async fn bit_flips_last_is_torn_middle_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), Duration::from_millis(1))
        .await
        .unwrap();
    for i in 1..=3 {
        j.append(record(i)).await.unwrap();
    }
    drop(j);
    let full = std::fs::read(log_path(dir.path())).unwrap();
    let mut last = full.clone();
    let n = last.len();
    last[n - 3] ^= 0x01;
    std::fs::write(log_path(dir.path()), &last).unwrap();
    assert_eq!(read_records(dir.path()).unwrap().0.len(), 2);
    let mut middle = full.clone();
    middle[HEADER + 5] ^= 0x01;
    std::fs::write(log_path(dir.path()), &middle).unwrap();
    let err = read_records(dir.path()).unwrap_err().to_string();
    assert!(err.contains("offset 0"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_get_unique_contiguous_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), Duration::from_millis(2))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let j = j.clone();
            tokio::spawn(async move { j.append(record(i)).await.unwrap() })
        })
        .collect();
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    seqs.sort();
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
    let (records, _) = read_records(dir.path()).unwrap();
    assert_eq!(records.len(), 200);
    assert!(records.windows(2).all(|w| w[1].seq == w[0].seq + 1));
}

#[test]
fn describes_query_and_extended_messages() {
    let mut m = Vec::new();
    let frame = |tag: u8, body: &[u8], m: &mut Vec<u8>| {
        m.push(tag);
        m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(body);
    };
    frame(b'Q', b"INSERT INTO t VALUES (1)\0", &mut m);
    frame(b'P', b"s1\0INSERT INTO t VALUES ($1, $2)\0\0\0", &mut m);
    // Bind: portal "", statement s1, formats [0, 1], 2 params: 'a', int4 7 (binary), results 0.
    let mut bind = b"\0s1\0\0\x02\0\0\0\x01\0\x02\0\0\0\x01a\0\0\0\x04\0\0\0\x07\0\0".to_vec();
    bind.truncate(bind.len());
    frame(b'B', &bind, &mut m);
    frame(b'E', b"\0\0\0\0\0", &mut m);
    frame(b'S', b"", &mut m);
    let d = describe(&m);
    assert_eq!(d[0], "INSERT INTO t VALUES (1)");
    assert_eq!(
        d[1],
        "INSERT INTO t VALUES ($1, $2)  -- parameters: 'a', \\x00000007"
    );
    assert!(describe(b"Q\0\0\xff\xff")
        .iter()
        .all(|s| s.contains("truncated")));
}
