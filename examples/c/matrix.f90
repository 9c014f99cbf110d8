! Fortran (gfortran, libgfortran dynamically linked): a matrix product,
! array intrinsics and formatted output; the same on every run and on
! Linux.
program matrix
    implicit none
    integer, parameter :: n = 200
    real(8) :: a(n, n), b(n, n), c(n, n)
    integer :: i, j
    do j = 1, n
        do i = 1, n
            a(i, j) = real(mod(i * j, 7), 8) / 7.0d0
            b(i, j) = real(mod(i + j, 5), 8) / 5.0d0
        end do
    end do
    c = matmul(a, b)
    write (*, '(a, f16.6)') 'trace = ', sum([(c(i, i), i = 1, n)])
    write (*, '(a, f16.6)') 'sum   = ', sum(c)
    write (*, '(a, f16.6)') 'max   = ', maxval(c)
    write (*, '(a, 3f12.6)') 'c(1:3,1) = ', c(1:3, 1)
end program matrix
