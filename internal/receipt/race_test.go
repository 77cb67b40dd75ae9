//go:build race

package receipt

// raceEnabled is true when tests run under the race detector, where P-384
// arithmetic is an order of magnitude slower.
const raceEnabled = true
