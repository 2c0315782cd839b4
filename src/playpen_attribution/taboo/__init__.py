"""The Taboo WordGuesser task itself: reading a guess out of a reply the way the published metric
does (`guess`) and the offline demo task generated from the project's own lexicon (`demo`,
`lexicon.txt`)."""
