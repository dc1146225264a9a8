//! Graph answers are read into the types that hold what the robot uses, not
//! into `serde_json::Value` trees, which cost 60–100 bytes per byte of small
//! objects: a hostile server's answer within the body caps (16 MiB, more for
//! `$batch`) would otherwise take gigabytes.

#[global_allocator]
static ALLOC: mailrobot_fuzz::alloc::Counting = mailrobot_fuzz::alloc::Counting;

#[test]
fn a_graph_answer_of_small_objects_costs_a_few_bytes_per_byte() {
    // A $batch answer whose item body is four MiB of tiny objects.
    let tiny: Vec<String> = (0..450_000).map(|i| format!("{{\"k\":{}}}", i % 10)).collect();
    let input = format!(r#"{{"responses":[{{"id":"0","status":200,"body":{{"items":[{}]}}}}]}}"#, tiny.join(","));
    assert!(input.len() > 3 << 20);
    let before = mailrobot_fuzz::alloc::reset_peak();
    mailrobot_fuzz::graph_answer(input.as_bytes());
    let held = mailrobot_fuzz::alloc::peak() - before;
    let per_byte = held as f64 / input.len() as f64;
    assert!(per_byte < 4.0, "held {held} bytes for {} bytes of answer: {per_byte:.1} per byte", input.len());
}
