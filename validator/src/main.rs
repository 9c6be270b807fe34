fn main() {
    eprintln!("dualwrite-validator: not built yet");
    std::process::exit(2);
}
