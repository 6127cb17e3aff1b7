fn main() { callback_core::placeholder(); }
