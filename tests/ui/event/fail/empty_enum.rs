#![allow(dead_code, unused_variables)]

#[annals::event]
enum UserEvent {}

fn main() {}
