// What the oauth4webapi scripts here (keys.mjs, dpop.mjs, idjag.mjs)
// share: configuration from the environment, assertions, and the one line
// `RESULT {json}` the Go test reads, printed once, with a time limit.

export const env = (name) => {
	const v = process.env[name];
	if (!v) throw new Error(`${name} is not set`);
	return v;
};

export const check = (cond, what) => {
	if (!cond) throw new Error(`assertion failed: ${what}`);
};

// reporter returns finish(err?): it marks result ok (or records err, with
// its cause), prints the RESULT line and exits 0 only when ok. An
// unhandled rejection, or 45 s at one step, finishes with an error.
export function reporter(result) {
	let finished = false;
	function finish(err) {
		if (finished) return;
		finished = true;
		if (err) result.error = String(err && err.stack ? err.stack : err) + (err && err.cause ? ' cause: ' + JSON.stringify(err.cause) : '');
		else result.ok = true;
		process.stdout.write('RESULT ' + JSON.stringify(result) + '\n', () => process.exit(result.ok ? 0 : 1));
	}
	setTimeout(() => finish(new Error(`timed out at step ${result.step}`)), 45_000).unref();
	process.on('unhandledRejection', (e) => finish(e));
	return finish;
}
