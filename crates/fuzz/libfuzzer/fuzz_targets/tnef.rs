#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mailrobot_fuzz::tnef(data));
