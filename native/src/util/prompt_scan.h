// Fast accept-only checks. FastPromptAccepts: an API-format prompt: strict JSON syntax (RFC 8259, UTF-8 checked) plus
// the graph shape (an object of node id -> {class_type: non-empty string, inputs: object}), at memory speed on long
// strings.
//
// Contract: FastPromptAccepts(p) == true only if the full checker (nlohmann SAX + shape, in json_checks.cc) also
// accepts p. It may say false for valid prompts it does not handle itself (\u escapes, numbers that need a closer
// look): the caller then runs the full checker, which also writes the error message. So it never changes what is
// accepted, only how fast. A differential test and the fuzzer hold it to that.
#pragma once

#include <string_view>

namespace comfymq {

bool FastPromptAccepts(std::string_view prompt);

// The same fast accept-only check for any JSON value (wire fields: outputs, extras, workflows, errors).
// Contract: true only if nlohmann's json::accept also accepts the text; false means "ask it".
bool FastJsonAccepts(std::string_view text);

}  // namespace comfymq
