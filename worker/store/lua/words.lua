-- words.lua: lists Python passes as one argument, space separated (states, providers...).
-- A helper, composed into the scripts that name it.

-- True if `word` is one of the space-separated `words`.
local function listed(words, word)
  for w in string.gmatch(words, '%S+') do
    if w == word then return true end
  end
  return false
end
