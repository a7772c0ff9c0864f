#include "master/signals.hpp"

#include <fmt/format.h>

namespace master {

std::string signal_table_markdown() {
  std::string out = "| signal | master | worker |\n|---|---|---|\n";
  for (const SignalSpec& spec : kSignalTable)
    out += fmt::format("| {} | {} | {} |\n", spec.name, spec.master_does, spec.worker_does);
  return out;
}

}  // namespace master
