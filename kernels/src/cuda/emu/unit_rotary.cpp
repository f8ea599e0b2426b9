// The emulator build of rotary.cu (g++, -DPAGODA_EMU).
#include "runtime.hpp"
#include "../cu/rotary.cu"
