#pragma once
// Lingua's eval.harness (lm-eval-harness task names) read as local task files, since nothing is
// downloaded here: each task of eval.harness.tasks, a name ("hellaswag") or a map ({task: boolq,
// num_fewshot: 0, ...}), is the JSONL file <eval.task_dir>/<name>.jsonl in the format of
// eval.tasks (lingua/eval/tasks.h), scored under its name; a name without a file is left out with
// a note (config_notes). num_fewshot and limit come from the
// task's map, else from eval.harness; fewshot_random_seed is the few-shot seed; the request type
// follows the file's fields (choices: multiple_choice, answer: generate_until, text alone:
// loglikelihood_rolling). Other lm-eval keys are accepted and not used.
#include <string>
#include <vector>

#include "lingua/config/any_value.h"

namespace lingua {

struct TaskConfig;
// The tasks of `harness` (its YAML; "" gives none) whose file exists; the names of the others go
// to `missing` (config_notes says so: a Lingua config naming lm-eval tasks still loads). Fails
// naming eval.harness.tasks[i] when an entry is neither a name nor a map with a 'task'.
std::vector<TaskConfig> harness_tasks(const AnyValue& harness, const std::string& task_dir,
                                      std::vector<std::string>* missing = nullptr);

}  // namespace lingua
