# Fuzz harnesses (libFuzzer, with clang from Debian; scripts/deps.sh fuzz installs it) and the
# clang UBSan build. Included at the end of the Makefile, so LIBSRC and LIBS are known here.
#   make fuzz          each harness for FUZZ_TIME seconds (default 60), from the shipped files
#   make fuzz-ci       each harness for 10 s: about a minute in all, for CI
#   make ubsan-clang   every test under clang's UndefinedBehaviorSanitizer, which unlike GCC's
#                      has -fsanitize=float-cast-overflow (a double too large for its integer)
FUZZ_BUILD  ?= build-fuzz
FUZZ_CC     ?= clang
FUZZ_TIME   ?= 60
FUZZ_SAN    := -fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=undefined,float-cast-overflow \
               -fno-omit-frame-pointer
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -g -O1 $(FUZZ_SAN) -DKVPR_VERSION='"fuzz"' -DKVPR_DATADIR='"$(CURDIR)"'
FUZZERS     := exp model profile dump errmsg plan
FUZZ_OBJ    := $(LIBSRC:%.c=$(FUZZ_BUILD)/%.o)
FUZZ_BIN    := $(FUZZERS:%=$(FUZZ_BUILD)/fuzz_%)

.PHONY: fuzz fuzz-ci fuzz-deps ubsan-clang

fuzz-deps:
	@./scripts/deps.sh fuzz

$(FUZZ_OBJ) $(FUZZ_BIN): | fuzz-deps

$(FUZZ_BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h $(FUZZ_OBJ)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $< $(FUZZ_OBJ) -o $@ $(LIBS)

fuzz: $(FUZZ_BIN)
	./tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_TIME)

fuzz-ci: $(FUZZ_BIN)
	./tests/fuzz/run.sh $(FUZZ_BUILD) 10

# Warnings are errors for gcc (CI=true); clang's differ, so this build only shows them.
UBSAN_BUILD ?= build-ubsan-clang
ubsan-clang: fuzz-deps
	$(MAKE) CC=clang CI=false BUILD=$(UBSAN_BUILD) OPT=-O1 \
	    SAN="-fsanitize=undefined,float-cast-overflow -fno-sanitize-recover=all -fno-omit-frame-pointer" test

# clang 14 has no _Float16 on x86-64: the host reference kernels are built by gcc, unsanitized.
$(UBSAN_BUILD)/kernels/%.o: override CC := gcc
$(UBSAN_BUILD)/kernels/%.o: CFLAGS := $(filter-out -fsanitize=% -fno-sanitize-recover=%,$(CFLAGS))

-include $(FUZZ_OBJ:.o=.d)
