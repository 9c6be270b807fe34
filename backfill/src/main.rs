fn main() {
    eprintln!("dualwrite-backfill: not built yet");
    std::process::exit(2);
}
