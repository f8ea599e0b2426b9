// The emulator build of norm.cu (g++, -DPAGODA_EMU).
#include "runtime.hpp"
#include "../cu/norm.cu"
