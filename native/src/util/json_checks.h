// Validation of the JSON values callers hand the store, without building a document where avoidable.
#pragma once

#include <string>
#include <string_view>

#include "comfymq/status.h"

namespace comfymq {

// OK when `text` is valid JSON whose top-level value is an object. `what` names the field in messages.
Status ValidateJsonObject(std::string_view text, const char* what);
// OK when `text` is any valid JSON value.
Status ValidateJsonValue(std::string_view text, const char* what);
// The full prompt check (nlohmann SAX + graph shape) with its error messages. ValidatePromptJson (job.h) runs
// FastPromptAccepts (prompt_scan.h) first and this only when that does not accept; exposed for tests.
Status CheckPromptJsonFully(std::string_view prompt);

}  // namespace comfymq
