"""LoraControl: promoting adapter versions into a serving engine, with an eval gate and rollback."""
