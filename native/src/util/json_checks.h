// Validation of the JSON values callers hand the store, without building a document where avoidable.
#pragma once

#include <string>
#include <string_view>

#include "comfymq/status.h"

namespace comfymq {

// OK when `text` is valid JSON whose top-level value is an object, nested at most kMaxJsonDepth (job.h)
// deep. `what` names the field in messages.
Status ValidateJsonObject(std::string_view text, const char* what);
// OK when `text` is any valid JSON value nested at most kMaxJsonDepth deep.
Status ValidateJsonValue(std::string_view text, const char* what);
// True when `text` is valid JSON, however deep (the protocol takes a job this way, so that a worker can refuse a
// too deep one by name instead of dropping the message).
bool JsonSyntaxAccepts(std::string_view text);
// For text that is valid JSON: true when no object or array nests deeper than `limit`.
bool JsonDepthWithin(std::string_view text, int limit);
// The full prompt check (nlohmann SAX + graph shape) with its error messages. ValidatePromptJson (job.h) runs
// FastPromptAccepts (prompt_scan.h) first and this only when that does not accept; exposed for tests.
Status CheckPromptJsonFully(std::string_view prompt);
// `text` with every byte that is not part of a well-formed UTF-8 sequence written as \xNN: for messages that
// quote what a caller sent (Python, and JSON, take only valid UTF-8).
std::string ValidUtf8(const std::string& text);

}  // namespace comfymq
