# The dev loop. `make test` is what CI runs (scripts/test.sh).
.PHONY: setup fmt lint test unit bench up

setup:
	scripts/setup.sh

fmt:
	cargo fmt --all

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

# Unit tests only: touch nothing external.
unit:
	cargo test --workspace --lib

test:
	scripts/test.sh

bench:
	cargo run --release -p tether-bench --bin audit-rules

up:
	scripts/up.sh
