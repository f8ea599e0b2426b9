// The emulator build of attention_decode.cu (g++, -DPAGODA_EMU).
#include "runtime.hpp"
#include "../cu/attention_decode.cu"
