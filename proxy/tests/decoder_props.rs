//! Property tests of the frontend/backend frame decoder: arbitrary bytes never panic it, and
//! any split of a valid stream forwards exactly the input while seeing every wanted message.

use dualwrite_proxy::protocol::{header, parse_startup, startup_len, Scanner};
use proptest::prelude::*;

fn frame() -> impl Strategy<Value = (u8, Vec<u8>)> {
    (
        prop::sample::select(vec![b'Q', b'P', b'B', b'E', b'S', b'd', b'D', b'Z', b'C']),
        prop::collection::vec(any::<u8>(), 0..300),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048), max in 0usize..100_000) {
        let _ = header(&bytes, max);
        let _ = parse_startup(&bytes);
        if bytes.len() >= 4 {
            let _ = startup_len([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
        let mut s = Scanner::default();
        let mut pos = 0;
        // Feed in pieces; the scanner must never claim more than it was given.
        for chunk in bytes.chunks(37) {
            match s.scan(chunk, max, |t| t == b'Z' || t == b'Q', |_, _| Ok(())) {
                Ok(n) => { prop_assert!(n <= chunk.len()); pos += n; }
                Err(_) => break,
            }
        }
        prop_assert!(pos <= bytes.len());
    }

    #[test]
    fn any_split_forwards_everything(frames in prop::collection::vec(frame(), 1..20), cuts in prop::collection::vec(1usize..64, 1..200)) {
        let mut stream = Vec::new();
        let mut wanted = Vec::new();
        for (tag, body) in &frames {
            stream.push(*tag);
            stream.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
            stream.extend_from_slice(body);
            if *tag == b'Z' || *tag == b'Q' {
                wanted.push((*tag, body.clone()));
            }
        }
        let mut s = Scanner::default();
        let mut buf: Vec<u8> = Vec::new();
        let mut forwarded = Vec::new();
        let mut seen = Vec::new();
        let mut rest = &stream[..];
        let mut i = 0;
        while !rest.is_empty() || !buf.is_empty() {
            let take = cuts[i % cuts.len()].min(rest.len());
            i += 1;
            buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            let n = s.scan(&buf, 1 << 20, |t| t == b'Z' || t == b'Q', |t, b| { seen.push((t, b.to_vec())); Ok(()) }).unwrap();
            forwarded.extend(buf.drain(..n));
            if take == 0 && n == 0 { break; }
        }
        prop_assert_eq!(forwarded, stream);
        prop_assert_eq!(seen, wanted);
        prop_assert!(s.at_boundary());
    }
}
