// The emulator build of cache.cu (g++, -DPAGODA_EMU).
#include "runtime.hpp"
#include "../cu/cache.cu"
