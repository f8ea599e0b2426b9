// The emulator build of layout.cu (g++, -DPAGODA_EMU).
#include "runtime.hpp"
#include "../cu/layout.cu"
