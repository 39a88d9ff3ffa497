#![allow(dead_code, unused_variables)]

#[annals::event(name = "iam.bits")]
union Bits {
    int: u32,
    float: f32,
}

fn main() {}
