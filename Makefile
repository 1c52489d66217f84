# kvpr: one block of settings, then the targets.
#   make          build (installs missing Debian packages first)
#   make test     build and run every test
#   make run      the main job
#   make bench    benchmarks
#   make asan     AddressSanitizer + UndefinedBehaviorSanitizer build and tests
#   make clean
CC      ?= gcc
BUILD   ?= build
OPT     ?= -O2
SAN     ?=
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo unknown)
WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wpointer-arith \
           -Wcast-align -Wformat=2 -Wundef -Wvla -Wwrite-strings -Wold-style-definition \
           -Wdouble-promotion -Wno-format-nonliteral
ifeq ($(CI),true)
WARN    += -Werror
endif
CFLAGS  := -std=c11 -D_GNU_SOURCE -g $(OPT) $(WARN) $(SAN) -DKVPR_VERSION='"$(VERSION)"' \
           -DKVPR_DATADIR='"$(CURDIR)"' -DKVPR_BUILD='"$(CURDIR)/$(BUILD)"'
LDFLAGS := $(SAN)
LIBS    := -ljansson -lsqlite3 -lglpk -lgsl -lopenblas -lm -lpthread
TESTLIBS:= -lcmocka
# CUDA: the engine's CUDA backend and kernels build wherever nvcc exists; without it kvpr-engine
# has the host backend only. kvpr itself never links CUDA.
CUDA_HOME ?= /usr/local/cuda
NVCC    ?= $(shell command -v nvcc 2>/dev/null || (test -x $(CUDA_HOME)/bin/nvcc && echo $(CUDA_HOME)/bin/nvcc))
CUARCH  ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90
NVFLAGS := -O2 -std=c++17 $(CUARCH) -Xcompiler -Wall,-Wextra $(if $(filter true,$(CI)),-Werror all-warnings,)

LIBSRC  := $(wildcard core/*.c hwmodel/*.c sched/*.c sim/*.c exp/*.c)
ENGSRC  := engine/exec.c engine/host.c kernels/ref.c
ENGOBJ  := $(ENGSRC:%.c=$(BUILD)/%.o)
ifneq ($(NVCC),)
CUOBJ   := $(BUILD)/engine/cuda.o $(BUILD)/kernels/attention.o $(BUILD)/kernels/activate.o
CULIBS  := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcudart -lstdc++
else
CUOBJ   := $(BUILD)/engine/nocuda.o
CULIBS  :=
endif
CLISRC  := $(wildcard cli/*.c)
TESTSRC := $(wildcard tests/*.c)
LIBOBJ  := $(LIBSRC:%.c=$(BUILD)/%.o)
CLIOBJ  := $(CLISRC:%.c=$(BUILD)/%.o)
TESTOBJ := $(TESTSRC:%.c=$(BUILD)/%.o)
DEPS    := $(LIBOBJ:.o=.d) $(CLIOBJ:.o=.d) $(TESTOBJ:.o=.d) $(ENGOBJ:.o=.d) $(BUILD)/bench/bench.d $(BUILD)/engine/main.d

.PHONY: all deps test run bench asan clean
all: deps $(BUILD)/kvpr $(BUILD)/kvpr-engine $(BUILD)/kvpr-tests

deps:
	@./scripts/deps.sh

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -I. -c $< -o $@

ENGCLI  := $(BUILD)/cli/cli.o $(BUILD)/cli/args.o
$(BUILD)/kvpr-engine: $(BUILD)/engine/main.o $(ENGOBJ) $(CUOBJ) $(ENGCLI) $(BUILD)/libkvpr.a
	$(CC) $(LDFLAGS) -o $@ $(BUILD)/engine/main.o $(ENGOBJ) $(CUOBJ) $(ENGCLI) $(BUILD)/libkvpr.a $(LIBS) $(CULIBS)

$(BUILD)/libkvpr.a: $(LIBOBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/kvpr: $(CLIOBJ) $(BUILD)/libkvpr.a
	$(CC) $(LDFLAGS) -o $@ $(CLIOBJ) $(BUILD)/libkvpr.a $(LIBS)

$(BUILD)/kvpr-bench: $(BUILD)/bench/bench.o $(BUILD)/libkvpr.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/kvpr-tests: $(TESTOBJ) $(ENGOBJ) $(BUILD)/engine/nocuda.o $(BUILD)/libkvpr.a
	$(CC) $(LDFLAGS) -o $@ $(TESTOBJ) $(ENGOBJ) $(BUILD)/engine/nocuda.o $(BUILD)/libkvpr.a $(LIBS) $(TESTLIBS)

test: all
	cd $(BUILD) && ./kvpr-tests

run: all
	./scripts/run.sh $(BUILD)/kvpr

bench: all $(BUILD)/kvpr-bench
	$(BUILD)/kvpr-bench

asan:
	$(MAKE) BUILD=build-asan OPT=-O1 SAN="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" test

clean:
	rm -rf build build-asan

-include $(DEPS)
