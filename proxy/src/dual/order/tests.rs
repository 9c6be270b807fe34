use super::*;

fn order(bound_ms: u64) -> Arc<CommitOrder> {
    Arc::new(CommitOrder::new(Duration::from_millis(bound_ms)))
}

#[tokio::test]
async fn positions_settle_in_order_whatever_order_tickets_drop_in() {
    let o = order(0);
    let ids: Vec<u64> = (0..3).map(|_| o.fly(false)).collect();
    let a = o.answered(ids[0], true).unwrap();
    let b = o.answered(ids[1], true).unwrap();
    let c = o.answered(ids[2], true).unwrap();
    assert_eq!((a.pos(), b.pos(), c.pos()), (Some(1), Some(2), Some(3)));
    assert!(a.turn(None).await);
    assert!(!c.turn(Some(Duration::from_millis(20))).await);
    drop(c);
    assert_eq!(o.settled(), 0, "3 settled but 1 and 2 are not");
    drop(a);
    assert_eq!(o.settled(), 1);
    assert!(b.turn(Some(Duration::from_millis(20))).await);
    drop(b);
    assert_eq!(o.settled(), 3);
    assert!(o.acks_settled_to(3, Some(Duration::from_millis(1))).await);
}

#[tokio::test]
async fn keys_not_acknowledgements_decide_the_order() {
    let o = order(1000);
    let (first, second) = (o.fly(false), o.fly(false));
    // `first` read its key before `second`, but `second` is acknowledged first: it waits
    // for `first`, which is still in flight with a smaller key.
    o.key(first, 100);
    o.key(second, 200);
    let b = o.answered(second, true).unwrap();
    assert_eq!(b.pos(), None);
    let a = o.answered(first, true).unwrap();
    assert_eq!((a.pos(), b.pos()), (Some(1), Some(2)));
}

#[tokio::test]
async fn a_flight_without_a_key_is_waited_for_at_most_the_bound() {
    let o = order(30);
    let (slow, done) = (o.fly(false), o.fly(false));
    o.key(done, 50);
    let t = o.answered(done, true).unwrap();
    assert_eq!(t.pos(), None, "waits: `slow` may have committed before");
    assert!(t.turn(Some(Duration::from_secs(2))).await);
    assert_eq!(t.pos(), Some(1));
    // `slow` answers later with a larger key: it comes after.
    o.key(slow, 80);
    let s = o.answered(slow, true).unwrap();
    assert_eq!(s.pos(), Some(2));
}

#[tokio::test]
async fn a_dropped_ticket_settles_when_positioned_and_rollbacks_leave_no_hole() {
    let o = order(1000);
    let (a, b, c) = (o.fly(false), o.fly(false), o.fly(false));
    o.key(a, 10);
    o.key(c, 30);
    let tc = o.answered(c, true).unwrap();
    drop(tc); // not positioned yet: settled once it is
    assert!(o.answered(b, false).is_none()); // rolled back: no place
    let ta = o.answered(a, true).unwrap();
    assert_eq!(ta.pos(), Some(1));
    drop(ta);
    assert_eq!(o.settled(), 2);
    assert_eq!(o.positions(), 2);
}

#[test]
fn lsn_text_is_parsed() {
    assert_eq!(parse_lsn(b"16/B374D848"), Some((0x16 << 32) | 0xB374D848));
    assert_eq!(parse_lsn(b"0/0"), Some(0));
    assert_eq!(parse_lsn(b"nonsense"), None);
    assert_eq!(parse_lsn(b"1/"), None);
}

#[tokio::test]
async fn what_commits_after_a_mark_and_units_in_flight_wrote() {
    let o = Arc::new(CommitOrder::default());
    let t = |names: &[&str]| -> Touch { Some(names.iter().map(|n| n.to_string()).collect()) };
    assert_eq!(o.touched_since(0, 9), Touched::Nothing);
    let a = o.forwarded(false, 1, t(&["a"]));
    assert_eq!(o.touched_since(0, 9), Touched::Tables(vec!["a".into()]));
    let _ta = a.answered(true);
    let mark = o.acks();
    assert_eq!(o.touched_since(mark, 9), Touched::Nothing);
    let b = o.forwarded(false, 1, t(&["b", "a"]));
    let _tb = b.answered(true);
    assert_eq!(
        o.touched_since(0, 9),
        Touched::Tables(vec!["b".into(), "a".into()])
    );
    assert_eq!(
        o.touched_since(mark, 9),
        Touched::Tables(vec!["b".into(), "a".into()])
    );
    // A unit whose writes are not all known, in flight or committed.
    let c = o.forwarded(false, 1, None);
    assert_eq!(o.touched_since(o.acks(), 9), Touched::Unknown);
    // The reading session's own units are not in doubt.
    assert_eq!(o.touched_since(o.acks(), 1), Touched::Nothing);
    assert_eq!(o.touched_since(0, 1), Touched::Nothing);
    drop(c.answered(false));
    assert_eq!(o.touched_since(o.acks(), 9), Touched::Nothing);
}
