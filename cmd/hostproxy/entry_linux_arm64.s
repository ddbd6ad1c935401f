#include "textflag.h"

// entry: see entry_linux.go.
TEXT ·entry(SB),NOSPLIT|NOFRAME,$0
	MOVD	$0, R9
drop:
	MOVD	$167, R8	// SYS_prctl
	MOVD	$24, R0		// PR_CAPBSET_DROP
	MOVD	R9, R1
	MOVD	$0, R2
	MOVD	$0, R3
	MOVD	$0, R4
	SVC
	ADD	$1, R9
	CMP	$64, R9
	BLT	drop
	JMP	_rt0_arm64_linux(SB)
