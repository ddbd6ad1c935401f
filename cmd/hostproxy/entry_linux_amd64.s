#include "textflag.h"

// entry: see entry_linux.go.
TEXT ·entry(SB),NOSPLIT|NOFRAME,$0
	MOVQ	$0, R12
drop:
	MOVQ	$157, AX	// SYS_prctl
	MOVQ	$24, DI		// PR_CAPBSET_DROP
	MOVQ	R12, SI
	MOVQ	$0, DX
	MOVQ	$0, R10
	MOVQ	$0, R8
	SYSCALL
	INCQ	R12
	CMPQ	R12, $64
	JLT	drop
	JMP	_rt0_amd64_linux(SB)
