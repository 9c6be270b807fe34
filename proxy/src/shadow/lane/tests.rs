use super::*;

fn frame(tag: u8, body: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    protocol::frontend_message(&mut out, tag, body);
    out.freeze()
}

fn bind_step(stmt: &str, text: &str) -> Step {
    Step::Bind {
        statement: stmt.into(),
        generation: 1,
        parse: frame(f::PARSE, format!("{stmt}\0{text}\0\0\0").as_bytes()),
        bind: frame(f::BIND, format!("\0{stmt}\0\0\0\0\0\0\0").as_bytes()),
    }
}

#[test]
fn binds_point_at_the_lanes_own_statements_prepared_once() {
    let mut s = Statements::default();
    let mut out = BytesMut::new();
    let sync = Step::Raw(frame(f::SYNC, b""));
    let steps = vec![bind_step("P0_1", "SELECT 1"), sync.clone()];
    let parsed = s.encode(&steps, &mut out).expect("runnable");
    assert_eq!(parsed.len(), 1);
    let first = out.split().freeze();
    assert_eq!(first[0], f::PARSE);
    assert!(first.windows(12).any(|w| w == b"_dw_shadow_1"));
    // Another session's name for the same text: no second Parse, same lane statement.
    let steps = vec![bind_step("S_7", "SELECT 1"), sync];
    assert_eq!(s.encode(&steps, &mut out).expect("runnable").len(), 0);
    let second = out.split().freeze();
    assert_eq!(second[0], f::BIND);
    assert!(second.windows(14).any(|w| w == b"\0_dw_shadow_1\0"));
    assert!(!second.windows(3).any(|w| w == b"S_7"));
    // Forgotten after a failure: prepared again under a new name.
    s.forget(parsed);
    let steps = vec![bind_step("P0_1", "SELECT 1")];
    assert_eq!(s.encode(&steps, &mut out).expect("runnable").len(), 1);
    assert!(out.windows(12).any(|w| w == b"_dw_shadow_2"));
}

#[test]
fn extended_samples_ending_at_their_one_sync_can_share_it() {
    let sync = Step::Raw(frame(f::SYNC, b""));
    let execute = Step::Raw(frame(f::EXECUTE, b"\0\0\0\0\0"));
    let request = |steps: Vec<Step>, alone: bool| Request {
        steps,
        mark: 0,
        finish: Box::new(|_| {}),
        alone,
    };
    let two = vec![
        bind_step("a", "SELECT 1"),
        execute.clone(),
        bind_step("b", "SELECT 2"),
        execute.clone(),
        sync.clone(),
    ];
    assert_eq!(request(two.clone(), false).shareable(), Some(2));
    // Sent again after its group failed: a Sync of its own.
    assert_eq!(request(two, true).shareable(), None);
    // A simple Query ends at its own ReadyForQuery; so does a sample without a Sync last.
    let query = Step::Raw(frame(f::QUERY, b"SELECT 1\0"));
    assert_eq!(request(vec![query], false).shareable(), None);
    let unsynced = vec![bind_step("a", "SELECT 1"), execute.clone()];
    assert_eq!(request(unsynced, false).shareable(), None);
    let nothing_run = vec![bind_step("a", "SELECT 1"), sync];
    assert_eq!(request(nothing_run, false).shareable(), None);
}

#[test]
fn steps_a_shared_session_cannot_run_are_refused() {
    let mut s = Statements::default();
    let mut out = BytesMut::new();
    let close = Step::Raw(frame(f::CLOSE, b"Sx\0"));
    assert!(s.encode(std::slice::from_ref(&close), &mut out).is_none());
    // Refused after a Bind: nothing of it is left to send, and its statement is not kept.
    let steps = vec![bind_step("P0_1", "SELECT 1"), close];
    assert!(s.encode(&steps, &mut out).is_none());
    assert!(out.is_empty());
    assert!(s.names.is_empty());
    let parse = Step::Parse {
        statement: "x".into(),
        generation: 1,
        parse: frame(f::PARSE, b"x\0SELECT 1\0\0\0"),
    };
    assert!(s.encode(&[parse], &mut out).is_none());
}
