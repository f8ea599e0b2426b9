// The emulator build of moe.cu (g++, -DPAGODA_EMU).
#include "runtime.hpp"
#include "../cu/moe.cu"
