# airgap.ngc: every entry point installs what it needs first (scripts/bootstrap.sh).
.PHONY: bootstrap demo test check sanity units lint integration molecule bench docs clean

bootstrap:
	@bash scripts/bootstrap.sh

demo: bootstrap
	@bash scripts/demo.sh

test: bootstrap
	@bash scripts/test.sh all

check: bootstrap
	@bash scripts/check.sh

sanity units lint integration molecule docs: bootstrap
	@bash scripts/test.sh $@

bench: bootstrap
	@bash scripts/bench.sh

clean:
	rm -rf build tests/output .ansible
