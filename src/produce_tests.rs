use clap::Parser;

use super::*;
use crate::config::{Cli, Command};
use crate::event::fastpath;

fn synthetic(flags: &[&str]) -> Synthetic {
    let argv = ["aurore", "produce"].iter().chain(flags);
    let Command::Produce(args) = Cli::parse_from(argv).command else { unreachable!() };
    args.validate().unwrap();
    Synthetic::new(&args)
}

/// Of `n` events: (valid, with an id, sizes of the payloads), every valid one decoded by the fast path.
fn sample(synthetic: &mut Synthetic, n: usize) -> (usize, usize, Vec<usize>) {
    let (mut buf, mut valid, mut with_id, mut payloads) = (Vec::new(), 0, 0, Vec::new());
    for _ in 0..n {
        synthetic.next(&mut buf);
        let Some(event) = std::str::from_utf8(&buf).ok().and_then(fastpath::decode) else { continue };
        valid += 1;
        if let Some(id) = event.id {
            with_id += 1;
            assert_eq!(id.get_version_num(), 4, "{id}");
        }
        payloads.push(event.payload.unwrap().len());
    }
    (valid, with_id, payloads)
}

#[test]
fn id_ratio_is_the_share_of_valid_events_with_their_own_id() {
    let (valid, with_id, _) = sample(&mut synthetic(&["--id-ratio", "0.3", "--invalid-ratio", "0.2"]), 5_000);
    assert!((3_700..=4_300).contains(&valid), "{valid} valid of 5,000");
    let share = with_id as f64 / valid as f64;
    assert!((0.26..=0.34).contains(&share), "{with_id} of {valid} valid events carry an id");
    assert_eq!(sample(&mut synthetic(&["--id-ratio", "1"]), 500).1, 500);
}

#[test]
fn without_id_ratio_no_event_carries_an_id() {
    let mut plain = synthetic(&[]);
    let (valid, with_id, without) = sample(&mut plain, 2_000);
    assert_eq!((valid, with_id), (2_000, 0));
    let mut buf = Vec::new();
    plain.next(&mut buf);
    assert!(buf.starts_with(br#"{"service":""#), "{}", String::from_utf8_lossy(&buf));
    // An id lengthens the message, not the payload.
    let (_, _, with) = sample(&mut synthetic(&["--id-ratio", "0.5"]), 2_000);
    let range = |v: &[usize]| (v.iter().min().copied(), v.iter().max().copied());
    assert_eq!(range(&with), range(&without), "payload sizes");
}
