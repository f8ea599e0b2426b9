// The emulator build of sampling.cu (g++, -DPAGODA_EMU).
#include "runtime.hpp"
#include "../cu/sampling.cu"
