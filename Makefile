# kvpr: one block of settings, then the targets.
#   make          build (installs missing Debian packages first)
#   make test     build and run every test
#   make run      the main job
#   make bench    benchmarks
#   make asan     AddressSanitizer + UndefinedBehaviorSanitizer build and tests
#   make install PREFIX=DIR   kvpr and kvpr-engine into DIR/bin, their data into DIR/share/kvpr
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
# kvpr needs no BLAS of its own (GSL brings its CBLAS); OpenBLAS only where the engine's host
# backend multiplies (kvpr-engine, the test binary): kvpr starts without its threads
LIBS    := -ljansson -lsqlite3 -lglpk -lgsl -lm -lpthread
ENGLIBS := $(LIBS) -lopenblas
TESTLIBS:= -lcmocka
# CUDA: the engine's CUDA backend and kernels build wherever nvcc exists; without it kvpr-engine
# has the host backend only. kvpr itself never links CUDA.
CUDA_HOME ?= /usr/local/cuda
NVCC    ?= $(shell command -v nvcc 2>/dev/null || (test -x $(CUDA_HOME)/bin/nvcc && echo $(CUDA_HOME)/bin/nvcc))
CUARCH  ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90
NVFLAGS := -O2 -std=c++17 $(CUARCH) -Xcompiler -Wall,-Wextra $(if $(filter true,$(CI)),-Werror all-warnings,)

LIBSRC  := $(wildcard core/*.c hwmodel/*.c sched/*.c sim/*.c exp/*.c)
# the executor and its helpers (also in the test binary); the kvpr-engine commands
ENGSRC  := engine/exec.c engine/host.c engine/host_quant.c engine/fill.c engine/sysmem.c engine/budget.c kernels/ref.c
ENGOBJ  := $(ENGSRC:%.c=$(BUILD)/%.o)
ENGMAIN := $(BUILD)/engine/main.o $(BUILD)/engine/selftest.o $(BUILD)/engine/bench.o
ifneq ($(NVCC),)
CUOBJ   := $(BUILD)/engine/cuda.o $(BUILD)/kernels/attention.o $(BUILD)/kernels/activate.o $(BUILD)/kernels/quant.o
CULIBS  := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcudart -lstdc++
# portable: the CUDA runtime inside the binary; cuBLAS has no static archive here, so it is found
# on the GPU machine (rpath for the usual place, LD_LIBRARY_PATH otherwise)
CUPORT  := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart_static -lcublas -lcublasLt -lstdc++ -ldl -lrt
else
CUOBJ   := $(BUILD)/engine/nocuda.o
CULIBS  :=
CUPORT  :=
endif
# kvpr-engine is linked to run on a GPU machine that has none of our Debian libraries: the
# project's libraries come from their static archives (Debian's -dev packages ship them), so ldd
# lists only glibc, libstdc++/libgcc and cuBLAS. GLPK's archive refers to libltdl, which has no
# static archive; GLPK only loads ODBC/MySQL table drivers through it, which kvpr never uses, so
# engine/ltdl_stub.c answers those calls with "not available". The sanitizer build, or a machine
# without one of the archives, links as kvpr does (the ldd test then says it skipped). Expanded when
# the link runs, after deps has installed the packages.
STATICLIBS := jansson sqlite3 glpk z gsl openblas
STATICMISSING = $(strip $(foreach l,$(STATICLIBS),$(if $(filter /%,$(shell $(CC) -print-file-name=lib$(l).a)),,$(l))))
ENGLINK = $(if $(SAN)$(STATICMISSING),$(ENGLIBS) $(CULIBS),$(BUILD)/engine/ltdl_stub.o -Wl,-Bstatic $(STATICLIBS:%=-l%) -Wl,-Bdynamic \
          $(CUPORT) -lm -lpthread)
CLISRC  := $(wildcard cli/*.c)
TESTSRC := $(wildcard tests/*.c)
LIBOBJ  := $(LIBSRC:%.c=$(BUILD)/%.o)
CLIOBJ  := $(CLISRC:%.c=$(BUILD)/%.o)
TESTOBJ := $(TESTSRC:%.c=$(BUILD)/%.o)
DEPS    := $(LIBOBJ:.o=.d) $(CLIOBJ:.o=.d) $(TESTOBJ:.o=.d) $(ENGOBJ:.o=.d) $(BUILD)/bench/bench.d $(ENGMAIN:.o=.d) $(CUOBJ:.o=.d)

.PHONY: all deps test run bench asan clean install attn-tune
all: deps $(BUILD)/kvpr $(BUILD)/kvpr-engine $(BUILD)/kvpr-tests

deps:
	@./scripts/deps.sh

# deps is order-only: every compile waits for the packages (make -j on a fresh machine would
# otherwise compile before apt-get has installed the headers), and nothing rebuilds because of it
$(BUILD)/%.o: %.c | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

# the simulator's inner loops at -O3 (unrolled loops, vectorised record copies): about 3 % fewer
# instructions per simulated op, the same results to the bit (no fast-math); only over the default
# OPT (a build with OPT=-O0 for a debugger keeps it), HOTOPT= for -O2 alone
HOTOPT  ?= $(if $(filter -O2,$(OPT)),-O3)
$(BUILD)/sim/des.o $(BUILD)/sim/sim.o $(BUILD)/sched/graph.o: CFLAGS += $(HOTOPT)

$(BUILD)/%.o: %.cu | deps
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -I. -MMD -MP -c $< -o $@

ENGCLI  := $(BUILD)/cli/cli.o $(BUILD)/cli/args.o
$(BUILD)/kvpr-engine: $(ENGMAIN) $(ENGOBJ) $(CUOBJ) $(ENGCLI) $(BUILD)/libkvpr.a $(BUILD)/engine/ltdl_stub.o
	$(CC) $(LDFLAGS) -o $@ $(ENGMAIN) $(ENGOBJ) $(CUOBJ) $(ENGCLI) $(BUILD)/libkvpr.a $(ENGLINK)

# the version (git describe) is compiled into core/db.c: rebuild it when the version changes, so a
# binary never reports an older commit than it was built from
$(BUILD)/.version: FORCE
	@mkdir -p $(BUILD); echo '$(VERSION)' | cmp -s - $@ || echo '$(VERSION)' > $@
$(BUILD)/core/db.o: $(BUILD)/.version
.PHONY: FORCE
FORCE:

$(BUILD)/libkvpr.a: $(LIBOBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/kvpr: $(CLIOBJ) $(BUILD)/libkvpr.a
	$(CC) $(LDFLAGS) -o $@ $(CLIOBJ) $(BUILD)/libkvpr.a $(LIBS)

# decode attention's partition and load depth measured on a GPU (bench/attn_tune.cu); the CUDA
# runtime linked statically, so the binary runs on a GPU machine as it is
attn-tune: $(BUILD)/kvpr-attn-tune
$(BUILD)/kvpr-attn-tune: bench/attn_tune.cu $(BUILD)/kernels/attention.o | deps
	$(NVCC) $(NVFLAGS) -I. -o $@ bench/attn_tune.cu $(BUILD)/kernels/attention.o -cudart static

$(BUILD)/kvpr-bench: $(BUILD)/bench/bench.o $(BUILD)/libkvpr.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/kvpr-tests: $(TESTOBJ) $(ENGOBJ) $(BUILD)/engine/nocuda.o $(BUILD)/libkvpr.a
	$(CC) $(LDFLAGS) -o $@ $(TESTOBJ) $(ENGOBJ) $(BUILD)/engine/nocuda.o $(BUILD)/libkvpr.a $(ENGLIBS) $(TESTLIBS)

test: all
	cd $(BUILD) && ./kvpr-tests

run: all
	./scripts/run.sh $(BUILD)/kvpr

bench: all $(BUILD)/kvpr-bench
	$(BUILD)/kvpr-bench

asan:
	$(MAKE) BUILD=build-asan OPT=-O1 SAN="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" test

# The binaries find their data at BINDIR/../share/kvpr (core/datadir.c), so an install is a copy:
# no rebuild, and the same binaries run from the build tree.
PREFIX  ?= /usr/local
install: $(BUILD)/kvpr $(BUILD)/kvpr-engine
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/kvpr/hwmodel/profiles $(DESTDIR)$(PREFIX)/share/kvpr/hwmodel/links \
	    $(DESTDIR)$(PREFIX)/share/kvpr/experiments $(DESTDIR)$(PREFIX)/share/kvpr/hwmodel/topologies
	install -m 755 $(BUILD)/kvpr $(BUILD)/kvpr-engine $(DESTDIR)$(PREFIX)/bin/
	install -m 644 hwmodel/profiles/*.json hwmodel/profiles/README.md $(DESTDIR)$(PREFIX)/share/kvpr/hwmodel/profiles/
	install -m 644 hwmodel/links/*.json $(DESTDIR)$(PREFIX)/share/kvpr/hwmodel/links/
	install -m 644 hwmodel/topologies/*.json hwmodel/topologies/README.md $(DESTDIR)$(PREFIX)/share/kvpr/hwmodel/topologies/
	install -m 644 $(wildcard experiments/*.exp experiments/*.json) $(DESTDIR)$(PREFIX)/share/kvpr/experiments/

clean:
	rm -rf build build-asan

-include $(DEPS)

# Fuzz harnesses (tests/fuzz): `make fuzz` runs each for a bounded time; `make fuzz-ci` briefly.
-include tests/fuzz/fuzz.mk
