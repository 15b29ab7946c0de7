#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| imspd_fuzz::checks::frame_reader_input(data));
