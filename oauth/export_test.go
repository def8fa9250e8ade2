package oauth

import "time"

// RevokeSubjectForTest voids the agent's tokens issued up to since, as
// disabling it does.
func RevokeSubjectForTest(v *Revocations, id string, since time.Time) {
	v.addSubject(id, since.Unix(), since.Add(time.Hour).Unix())
}
