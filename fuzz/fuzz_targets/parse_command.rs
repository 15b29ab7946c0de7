#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| imspd_fuzz::checks::parse_command_input(data));
