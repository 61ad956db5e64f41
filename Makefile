# The two commands of the README, and the developer's helpers.
#   make demo   install what Runnel needs, build Release, run the demo
#   make test   install what the tests need, build Debug with ASan+UBSan, run CTest
JOBS ?= $(shell nproc)
CTEST_JOBS ?= 2
SOURCES = $(shell git ls-files '*.cpp' '*.hpp' '*.hpp.in')

.PHONY: demo test release debug fuzz deps deps-test format lint clean

deps:
	scripts/install-deps.sh build

deps-test:
	scripts/install-deps.sh test

release: deps
	cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release -DRUNNEL_BUILD_TESTS=OFF
	cmake --build build/release -j $(JOBS)

demo: release
	./build/release/src/runnel demo

debug: deps-test
	cmake -S . -B build/test -G Ninja -DCMAKE_BUILD_TYPE=Debug -DRUNNEL_SANITIZE=ON -DRUNNEL_WERROR=ON \
	      -DRUNNEL_BUILD_TESTS=ON
	cmake --build build/test -j $(JOBS)

test: debug fuzz
	cd build/test && ctest --output-on-failure -j $(CTEST_JOBS)

# libFuzzer targets (clang, ASan+UBSan): every parser, FUZZ_SECONDS each.
FUZZ_SECONDS ?= 20
fuzz: deps-test
	CC=clang CXX=clang++ cmake -S . -B build/fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRUNNEL_FUZZ=ON \
	      -DRUNNEL_BUILD_TESTS=OFF -DRUNNEL_WERROR=ON -DRUNNEL_FUZZ_SECONDS=$(FUZZ_SECONDS)
	cmake --build build/fuzz -j $(JOBS) --target fuzzers
	cd build/fuzz && ctest --output-on-failure -j $(CTEST_JOBS)

format:
	clang-format -i $(SOURCES)

lint: debug
	clang-tidy -p build/test --quiet $(filter %.cpp,$(SOURCES))

clean:
	rm -rf build
