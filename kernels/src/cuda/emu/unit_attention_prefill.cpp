// The emulator build of attention_prefill.cu (g++, -DPAGODA_EMU).
#include "runtime.hpp"
#include "../cu/attention_prefill.cu"
