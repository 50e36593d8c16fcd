package server

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Printable escapes what a terminal or a log reader would act on instead of showing: control
// characters (ESC, NUL, CR, newline, …), the Unicode line and paragraph separators and the
// bidirectional overrides and isolates (which reorder what follows them), each written as its
// Go escape (\x1b, \n, \u202e). Text a person typed into the API (who, reason) is stored
// this way, so every later printing of it (status, reports, logs) shows it as typed and it
// cannot forge a line or recolour a terminal.
func Printable(s string) string {
	return escapeText(s, false)
}

// printableLines is Printable keeping newlines, for the server's own multi-line notices
// whose parts may come from files.
func printableLines(s string) string {
	return escapeText(s, true)
}

func escapeText(s string, keepNewlines bool) string {
	clean := true
	for _, r := range s {
		if mustEscape(r) && !(keepNewlines && r == '\n') {
			clean = false
			break
		}
	}
	if clean && utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if !mustEscape(r) || (keepNewlines && r == '\n') {
			b.WriteRune(r)
			continue
		}
		q := strconv.QuoteRuneToASCII(r)
		b.WriteString(q[1 : len(q)-1])
	}
	return b.String()
}

func mustEscape(r rune) bool {
	switch {
	case r == utf8.RuneError:
		return false // already replaced: shows as �
	case unicode.IsControl(r):
		return true
	case r == '\u2028' || r == '\u2029': // line and paragraph separators
		return true
	case r >= '\u202a' && r <= '\u202e', r >= '\u2066' && r <= '\u2069', r == '\u200e', r == '\u200f', r == '\u061c':
		return true // bidirectional embeddings, overrides, isolates and marks
	}
	return false
}
