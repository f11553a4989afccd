#pragma once
// One function per `lingua` command; each takes the arguments after the command name.
#include <string>
#include <vector>

namespace lingua::app {

using Args = std::vector<std::string>;
int train_main(const Args& args);
int generate_main(const Args& args);
int eval_main(const Args& args);
int prepare_main(const Args& args);

// True (and prints the help) when args ask for it.
bool wants_help(const Args& args);

}  // namespace lingua::app
