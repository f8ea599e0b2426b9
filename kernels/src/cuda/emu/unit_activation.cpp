// The emulator build of activation.cu (g++, -DPAGODA_EMU).
#include "runtime.hpp"
#include "../cu/activation.cu"
